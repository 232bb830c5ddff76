// crd-apiserver: a stand-alone Kubernetes API server that serves only
// CustomResourceDefinitions and custom resources (k8s.io/apiextensions-apiserver),
// for checking Drover's CRDs (CEL rules, server-side apply) against a current
// server. Built by e2e/install-crdserver.sh from Debian's golang-k8s-* packages
// in GOPATH mode.
//
// Compared with the stock apiextensions-apiserver main.go it:
//   - turns off delegated authentication/authorization (which need an in-cluster
//     kubeconfig), admission, the core API informers and priority-and-fairness;
//   - authenticates bearer tokens from --token-auth-file (token,user,uid,"groups")
//     and allows every authenticated request; anonymous requests get 401;
//   - serves OpenAPI v2 (/openapi/v2) besides v3, /apis discovery (aggregated and
//     plain; in kube-apiserver the aggregator serves it) and an empty /api document,
//     so kubectl (discovery, apply, validation) works against it.
//
// There are no namespaces, core resources, RBAC, Secrets or Leases here.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"

	"github.com/spf13/cobra"
	noopoteltrace "go.opentelemetry.io/otel/trace/noop"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	"k8s.io/apiextensions-apiserver/pkg/apiserver"
	"k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	generatedopenapi "k8s.io/apiextensions-apiserver/pkg/generated/openapi"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/token/tokenfile"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	discoveryaggregated "k8s.io/apiserver/pkg/endpoints/discovery/aggregated"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/component-base/cli"
	netutils "k8s.io/utils/net"
)

// noServices answers every conversion-webhook service lookup with an error:
// there is no core API (and so no Service) on this server.
type noServices struct{}

func (noServices) ResolveEndpoint(namespace, name string, port int32) (*url.URL, error) {
	return nil, fmt.Errorf("service %s/%s:%d: this CRD-only server has no core API", namespace, name, port)
}

func main() {
	ctx := genericapiserver.SetupSignalContext()
	o := options.NewCustomResourceDefinitionsServerOptions(os.Stdout, os.Stderr)
	ro := o.RecommendedOptions
	ro.Authentication = nil
	ro.Authorization = nil
	ro.CoreAPI = nil
	ro.Admission = nil
	ro.Features.EnablePriorityAndFairness = false
	var tokenFile string

	cmd := &cobra.Command{
		Use:   "crd-apiserver",
		Short: "CRD-only Kubernetes API server (apiextensions-apiserver) with token authentication",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return o.ServerRunOptions.ComponentGlobalsRegistry.Set()
		},
		RunE: func(c *cobra.Command, _ []string) error {
			if tokenFile == "" {
				return fmt.Errorf("--token-auth-file is required")
			}
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return run(c.Context(), o, tokenFile)
		},
	}
	cmd.SetContext(ctx)
	fs := cmd.Flags()
	o.AddFlags(fs)
	fs.StringVar(&tokenFile, "token-auth-file", "", "CSV of bearer tokens: token,user,uid,\"group1,group2\"")
	os.Exit(cli.Run(cmd))
}

func run(ctx context.Context, o *options.CustomResourceDefinitionsServerOptions, tokenFile string) error {
	ro := o.RecommendedOptions
	if err := ro.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{netutils.ParseIPSloppy("127.0.0.1")}); err != nil {
		return fmt.Errorf("self-signed certificates: %v", err)
	}
	cfg := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	if err := o.ServerRunOptions.ApplyTo(&cfg.Config); err != nil {
		return err
	}
	if err := ro.ApplyTo(cfg); err != nil {
		return err
	}
	if err := o.APIEnablement.ApplyTo(&cfg.Config, apiserver.DefaultAPIResourceConfigSource(), apiserver.Scheme); err != nil {
		return err
	}

	tokens, err := tokenfile.NewCSV(tokenFile)
	if err != nil {
		return fmt.Errorf("--token-auth-file: %v", err)
	}
	cfg.Authentication.Authenticator = bearertoken.New(tokens)
	cfg.Authorization.Authorizer = authorizerfactory.NewAlwaysAllowAuthorizer()
	// The server's own loopback client (used by its controllers) gets a token too.
	genericapiserver.AuthorizeClientBearerToken(cfg.LoopbackClientConfig, &cfg.Authentication, &cfg.Authorization)

	defs := openapi.GetOpenAPIDefinitionsWithoutDisabledFeatures(generatedopenapi.GetOpenAPIDefinitions)
	namer := openapinamer.NewDefinitionNamer(apiserver.Scheme, scheme.Scheme)
	cfg.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(defs, namer)
	cfg.OpenAPIConfig.Info.Title = "crd-apiserver"
	cfg.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(defs, namer)
	cfg.OpenAPIV3Config.Info.Title = "crd-apiserver"

	config := &apiserver.Config{
		GenericConfig: cfg,
		ExtraConfig: apiserver.ExtraConfig{
			CRDRESTOptionsGetter: options.NewCRDRESTOptionsGetter(*ro.Etcd, cfg.ResourceTransformers, cfg.StorageObjectCountTracker),
			ServiceResolver:      noServices{},
			AuthResolverWrapper:  webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil, cfg.LoopbackClientConfig, noopoteltrace.NewTracerProvider()),
		},
	}
	// The CRD handler passes /apis itself to its delegate: serve the group list there.
	apis := &rootAPIs{}
	server, err := config.Complete().New(genericapiserver.NewEmptyDelegateWithCustomHandler(apis))
	if err != nil {
		return err
	}
	agg := server.GenericAPIServer.AggregatedDiscoveryGroupManager
	if agg == nil {
		return fmt.Errorf("aggregated discovery is off: enable the AggregatedDiscoveryEndpoint feature")
	}
	apis.handler = discoveryaggregated.WrapAggregatedDiscoveryToHandler(plainAPIs{agg}, agg, nil)

	// Legacy discovery: no core group here, but clients expect /api to answer.
	apiVersions, _ := json.Marshal(map[string]interface{}{
		"kind":       "APIVersions",
		"apiVersion": "v1",
		"versions":   []string{},
		"serverAddressByClientCIDRs": []map[string]string{
			{"clientCIDR": "0.0.0.0/0", "serverAddress": ro.SecureServing.BindAddress.String()},
		},
	})
	server.GenericAPIServer.Handler.NonGoRestfulMux.Handle("/api", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(apiVersions)
	}))
	return server.GenericAPIServer.PrepareRun().RunWithContext(ctx)
}

// rootAPIs serves /apis (and answers 404 elsewhere) once the server exists.
type rootAPIs struct{ handler http.Handler }

func (r *rootAPIs) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/apis" && req.URL.Path != "/apis/" || r.handler == nil {
		http.NotFound(w, req)
		return
	}
	r.handler.ServeHTTP(w, req)
}

// plainAPIs serves the unaggregated /apis (an APIGroupList) from the aggregated
// discovery document, which holds both the built-in group and the CRDs' groups.
type plainAPIs struct{ agg http.Handler }

const aggregatedAccept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

func (p plainAPIs) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	inner := httptest.NewRequest(http.MethodGet, "/apis", nil).WithContext(req.Context())
	inner.Header.Set("Accept", aggregatedAccept)
	rec := httptest.NewRecorder()
	p.agg.ServeHTTP(rec, inner)
	var doc apidiscoveryv2.APIGroupDiscoveryList
	if rec.Code != http.StatusOK {
		http.Error(w, rec.Body.String(), rec.Code)
		return
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		http.Error(w, "aggregated discovery: "+err.Error(), http.StatusInternalServerError)
		return
	}
	list := metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{}}
	for _, g := range doc.Items {
		group := metav1.APIGroup{Name: g.Name}
		for _, v := range g.Versions {
			gv := metav1.GroupVersionForDiscovery{GroupVersion: g.Name + "/" + v.Version, Version: v.Version}
			group.Versions = append(group.Versions, gv)
		}
		if len(group.Versions) == 0 {
			continue
		}
		group.PreferredVersion = group.Versions[0] // versions come in preference order
		list.Groups = append(list.Groups, group)
	}
	body, _ := json.Marshal(list)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}
