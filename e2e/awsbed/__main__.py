"""python -m awsbed --port PORT: serve the extended emulator on 127.0.0.1."""

import argparse
import signal
import sys

from werkzeug.serving import run_simple

from . import Bed


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=15000)
    args = parser.parse_args()
    bed = Bed()

    def stop(_signum, _frame):
        bed.postgres.close()  # its PostgreSQL servers go with it
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run_simple("127.0.0.1", args.port, bed, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
