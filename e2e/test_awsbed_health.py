"""Tests of the emulator's health signals with boto3: Route 53 GetHealthCheckStatus per
checker region as the bed controls it (e2e/awsbed/health.py), and the CloudWatch alarm calls
automatic failover reads (moto's own).

Retries are off, so every refusal is seen as is. The Route 53 rate limit is turned off for
each test (and put back) unless a test sets the rate it needs.
"""

import time

import botocore.exceptions
import pytest

from bedclient import aws, bed, uid


@pytest.fixture(autouse=True)
def clean_bed():
    bed("DELETE", "/faults")  # also ends outages
    before = bed("POST", "/config", {})
    bed("POST", "/config", {"route53_rate": 0})
    yield
    bed("POST", "/config", {k: before[k] for k in ("route53_rate", "route53_burst")})
    bed("DELETE", "/faults")


def r53():
    return aws("route53")


def new_check(**config):
    config = {"IPAddress": "10.1.0.10", "Port": 443, "Type": "HTTPS", "ResourcePath": "/healthz",
              **config}
    return r53().create_health_check(CallerReference=uid(), HealthCheckConfig=config)["HealthCheck"]["Id"]


def reports(hc_id):
    """checker region -> "Success" or "Failure", with each report's CheckedTime."""
    out = r53().get_health_check_status(HealthCheckId=hc_id)["HealthCheckObservations"]
    for o in out:
        checked = o["StatusReport"]["CheckedTime"].timestamp()
        assert abs(checked - time.time()) < 60, o
    return {o["Region"]: o["StatusReport"]["Status"].split(":")[0] for o in out}


def test_unknown_health_check_is_no_such_health_check():
    with pytest.raises(botocore.exceptions.ClientError) as e:
        r53().get_health_check_status(HealthCheckId="00000000-0000-0000-0000-000000000000")
    assert e.value.response["Error"]["Code"] == "NoSuchHealthCheck"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_every_checker_region_reports_success_by_default():
    hc = new_check()
    assert reports(hc) == {"us-east-1": "Success", "us-west-2": "Success", "eu-west-1": "Success"}


def test_the_checks_own_regions_are_its_checkers():
    regions = ["us-east-1", "ap-southeast-1", "sa-east-1"]
    hc = new_check(Regions=regions)
    assert sorted(reports(hc)) == sorted(regions)


def test_failure_from_some_checker_regions_then_all_then_none():
    hc = new_check()
    bed("POST", "/health-checks", {"id": hc, "failing_from": ["us-east-1", "us-west-2"]})
    assert reports(hc) == {"us-east-1": "Failure", "us-west-2": "Failure", "eu-west-1": "Success"}
    bed("POST", "/health-checks", {"id": hc, "healthy": False})
    assert set(reports(hc).values()) == {"Failure"}
    bed("POST", "/health-checks", {"id": hc, "healthy": True})
    assert set(reports(hc).values()) == {"Success"}
    bed("POST", "/health-checks", {"id": hc, "failing_from": ["eu-west-1"]})
    bed("POST", "/health-checks", {"id": hc, "failing_from": []})
    assert set(reports(hc).values()) == {"Success"}


def test_bad_control_payload_is_refused():
    with pytest.raises(Exception) as e:
        bed("POST", "/health-checks", {"id": "x", "failing_from": "us-east-1"})
    assert "400" in str(e.value)


def test_a_lost_region_fails_its_endpoints_checks_from_every_checker():
    east = new_check()
    west = new_check(IPAddress="10.2.0.10")
    bed("POST", "/health-checks", {"id": east, "endpoint_region": "us-east-1"})
    bed("POST", "/health-checks", {"id": west, "endpoint_region": "us-west-2"})
    bed("POST", "/outage", {"region": "us-east-1", "down": True})
    # Route 53 is global: still answering, and only the lost region's endpoint fails.
    assert set(reports(east).values()) == {"Failure"}
    assert set(reports(west).values()) == {"Success"}
    bed("POST", "/outage", {"region": "us-east-1", "down": False})
    assert set(reports(east).values()) == {"Success"}


def test_an_fqdn_naming_a_region_ties_the_check_to_it():
    hc = r53().create_health_check(CallerReference=uid(), HealthCheckConfig={
        "FullyQualifiedDomainName": "shop-lb-1234.eu-west-1.elb.amazonaws.com", "Port": 443,
        "Type": "HTTPS", "ResourcePath": "/healthz"})["HealthCheck"]["Id"]
    bed("POST", "/outage", {"region": "eu-west-1", "down": True})
    assert set(reports(hc).values()) == {"Failure"}


def test_health_check_status_counts_against_the_route53_rate_limit():
    hc = new_check()
    bed("POST", "/config", {"route53_rate": 0.2})  # a fresh bucket of 5, refilled slowly
    outcomes = []
    for _ in range(7):
        try:
            r53().get_health_check_status(HealthCheckId=hc)
            outcomes.append("ok")
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "Throttling", e.response
            outcomes.append("throttled")
    assert outcomes == ["ok"] * 5 + ["throttled"] * 2
    throttled = {t["operation"]: t["count"] for t in bed("GET", "/throttled")["throttled"]}
    assert throttled.get("GetHealthCheckStatus", 0) >= 2


def test_cloudwatch_alarm_state_as_automatic_failover_reads_it():
    cw = aws("cloudwatch", "us-west-2")
    name = f"api-5xx-{uid()}"
    cw.put_metric_alarm(AlarmName=name, MetricName="HTTPCode_ELB_5XX_Count",
                        Namespace="AWS/ApplicationELB", Statistic="Sum", Period=60,
                        EvaluationPeriods=1, Threshold=10, ComparisonOperator="GreaterThanThreshold")

    def state():
        alarms = cw.describe_alarms(AlarmNames=[name], AlarmTypes=["MetricAlarm", "CompositeAlarm"])
        return [a["StateValue"] for a in alarms["MetricAlarms"]]

    assert state() in (["OK"], ["INSUFFICIENT_DATA"])
    cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="e2e")
    assert state() == ["ALARM"]
    assert cw.describe_alarms(AlarmNames=[f"missing-{uid()}"])["MetricAlarms"] == []
    # Alarms are regional: us-east-1 does not have it.
    assert aws("cloudwatch", "us-east-1").describe_alarms(AlarmNames=[name])["MetricAlarms"] == []
