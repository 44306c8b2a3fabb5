package synth

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"

	crdsv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/client/crds/v2"
	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/policy/api"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"k8s.io/kube-openapi/pkg/validation/strfmt"
	"k8s.io/kube-openapi/pkg/validation/validate"
	"sigs.k8s.io/yaml"
)

// Errors returned (wrapped) by Validate; every refused policy matches exactly one of them.
var (
	// ErrSelectsNothing is returned for a policy whose selector is empty or names only a
	// namespace: it would select nothing useful or every pod of the namespace.
	ErrSelectsNothing = errors.New("policy selects no specific workload")
	// ErrAllowsEverything is returned for a rule that allows every peer or every port: entity
	// all, world without ports, a wildcard peer selector, 0.0.0.0/0, a "*" name, port 0 or
	// protocol ANY, or a rule with ports but no peer.
	ErrAllowsEverything = errors.New("policy allows everything")
	// ErrCilium is returned when Cilium's own Rule.Sanitize or CCNP.Parse rejects the policy.
	ErrCilium = errors.New("rejected by cilium")
	// ErrSchema is returned when the object does not validate against the CCNP CRD schema.
	ErrSchema = errors.New("rejected by the CiliumClusterwideNetworkPolicy CRD schema")
)

// Validate checks a policy the way the cluster will: our scope checks, Cilium's
// Rule.Sanitize (on a copy: it fills in defaults), Cilium's CCNP.Parse, and the CRD's
// OpenAPI v3 schema, including fields the API server would silently prune.
func Validate(p *v2.CiliumClusterwideNetworkPolicy, clusterName string) error {
	if p.Spec == nil || len(p.Specs) > 0 {
		return fmt.Errorf("%w: generated policies carry exactly one spec", ErrSelectsNothing)
	}
	if err := checkScope(p.Spec); err != nil {
		return err
	}
	if err := p.Spec.DeepCopy().Sanitize(); err != nil {
		return fmt.Errorf("%w: sanitize: %w", ErrCilium, err)
	}
	if _, err := p.DeepCopy().Parse(discardLogger, clusterName); err != nil {
		return fmt.Errorf("%w: parse: %w", ErrCilium, err)
	}
	if err := validateSchema(p); err != nil {
		return fmt.Errorf("%w: %w", ErrSchema, err)
	}
	return nil
}

// validateCNP checks that a policy renders as a CiliumNetworkPolicy (AsCNP) that Cilium's
// CNP parser accepts. Validate checks the rules themselves; the CNP CRD's spec schema is the
// CCNP one's.
func validateCNP(p *v2.CiliumClusterwideNetworkPolicy, clusterName string) error {
	c, err := AsCNP(p)
	if err != nil {
		return err
	}
	if _, err := c.Parse(discardLogger, clusterName); err != nil {
		return fmt.Errorf("%w: parse as CiliumNetworkPolicy: %w", ErrCilium, err)
	}
	return nil
}

// checkScope refuses rules that select nothing specific or allow everything.
func checkScope(r *api.Rule) error {
	sel := r.EndpointSelector
	if sel.LabelSelector == nil || len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		return fmt.Errorf("%w: empty endpoint selector", ErrSelectsNothing)
	}
	specific := false
	for k := range sel.MatchLabels {
		if k != namespaceKey {
			specific = true
		}
	}
	if !specific {
		return fmt.Errorf("%w: the selector names only a namespace", ErrSelectsNothing)
	}
	if _, ok := sel.MatchLabels[namespaceKey]; !ok {
		return fmt.Errorf("%w: the selector has no namespace and would select workloads in every namespace", ErrSelectsNothing)
	}
	for i, in := range r.Ingress {
		if len(r.Ingress) == 1 && reflect.DeepEqual(in, api.IngressRule{}) {
			continue // closed for lack of traffic: default deny, nothing allowed
		}
		if err := checkPeers(in.FromEndpoints, in.FromEntities, in.FromCIDRSet, nil, in.ToPorts, len(in.ICMPs) > 0); err != nil {
			return fmt.Errorf("ingress rule %d: %w", i, err)
		}
	}
	for i, eg := range r.Egress {
		if len(r.Egress) == 1 && reflect.DeepEqual(eg, api.EgressRule{}) {
			continue
		}
		if err := checkPeers(eg.ToEndpoints, eg.ToEntities, eg.ToCIDRSet, eg.ToFQDNs, eg.ToPorts, len(eg.ICMPs) > 0); err != nil {
			return fmt.Errorf("egress rule %d: %w", i, err)
		}
	}
	if len(r.IngressDeny)+len(r.EgressDeny) > 0 || len(r.Ingress)+len(r.Egress) == 0 {
		return fmt.Errorf("%w: a generated policy has allow rules only, and at least one", ErrSelectsNothing)
	}
	return nil
}

func checkPeers(eps []api.EndpointSelector, ents api.EntitySlice, cidrs api.CIDRRuleSlice, fqdns api.FQDNSelectorSlice, ports api.PortRules, icmp bool) error {
	if len(eps)+len(ents)+len(cidrs)+len(fqdns) == 0 {
		return fmt.Errorf("%w: no peer (the rule would apply to every peer)", ErrAllowsEverything)
	}
	if len(ports) == 0 && !icmp {
		return fmt.Errorf("%w: no ports", ErrAllowsEverything)
	}
	for _, e := range eps {
		if e.LabelSelector == nil || len(e.MatchLabels)+len(e.MatchExpressions) == 0 {
			return fmt.Errorf("%w: wildcard peer selector", ErrAllowsEverything)
		}
	}
	for _, e := range ents {
		switch e {
		case api.EntityAll, api.EntityWorldIPv4, api.EntityWorldIPv6:
			return fmt.Errorf("%w: entity %s", ErrAllowsEverything, e)
		}
	}
	for _, c := range cidrs {
		if strings.HasSuffix(string(c.Cidr), "/0") {
			return fmt.Errorf("%w: CIDR %s", ErrAllowsEverything, c.Cidr)
		}
	}
	for _, f := range fqdns {
		if strings.Trim(f.MatchPattern, "*.") == "" && f.MatchName == "" {
			return fmt.Errorf("%w: name pattern %q", ErrAllowsEverything, f.MatchPattern)
		}
	}
	for _, pr := range ports {
		for _, pp := range pr.Ports {
			if pp.Port == "" || pp.Port == "0" || pp.Protocol.IsAny() {
				return fmt.Errorf("%w: port %q protocol %q", ErrAllowsEverything, pp.Port, pp.Protocol)
			}
			if pp.EndPort != 0 && pp.Port == "1" && pp.EndPort >= 65535 {
				return fmt.Errorf("%w: port range 1-%d", ErrAllowsEverything, pp.EndPort)
			}
		}
	}
	return nil
}

// ccnpSchema is the openAPIV3Schema of the v2 CCNP CRD embedded in the cilium module; it
// is parsed once (the CRD is a 6,500-line document).
var ccnpSchema = sync.OnceValues(func() (*spec.Schema, error) {
	raw, err := crdsv2.EmbedFS.ReadFile("ciliumclusterwidenetworkpolicies.yaml")
	if err != nil {
		return nil, fmt.Errorf("read embedded CCNP CRD: %w", err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema json.RawMessage `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		return nil, fmt.Errorf("decode embedded CCNP CRD: %w", err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != v2.SchemeGroupVersion.Version {
			continue
		}
		s := &spec.Schema{}
		if err := json.Unmarshal(v.Schema.OpenAPIV3Schema, s); err != nil {
			return nil, fmt.Errorf("decode CCNP CRD schema: %w", err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("CCNP CRD has no version %s", v2.SchemeGroupVersion.Version)
})

// validateSchema checks the object as the API server would see it: the OpenAPI v3 schema
// (types, enums, patterns, required fields; CEL rules are not evaluated, and the one the
// CRD has, spec or specs present, is checked by Validate), and fields the schema does not
// know, which the API server would prune silently and so change the policy.
// ccnpValidator validates against ccnpSchema. Building a validator costs more than using it,
// and the API server too keeps one per CRD for every request, so it is built once.
var ccnpValidator = sync.OnceValues(func() (*validate.SchemaValidator, error) {
	s, err := ccnpSchema()
	if err != nil {
		return nil, err
	}
	return validate.NewSchemaValidator(s, nil, "", strfmt.Default), nil
})

func validateSchema(p *v2.CiliumClusterwideNetworkPolicy) error {
	s, err := ccnpSchema()
	if err != nil {
		return err
	}
	v, err := ccnpValidator()
	if err != nil {
		return err
	}
	obj, err := objectJSON(p, p.Name)
	if err != nil {
		return err
	}
	res := v.Validate(obj)
	if !res.IsValid() {
		msgs := make([]string, 0, len(res.Errors))
		for _, e := range res.Errors {
			msgs = append(msgs, e.Error())
		}
		sort.Strings(msgs)
		return errors.New(strings.Join(msgs, "; "))
	}
	if unknown := unknownFields(s, obj, ""); len(unknown) > 0 {
		slices.Sort(unknown)
		return fmt.Errorf("fields not in the schema (the API server would drop them): %s", strings.Join(unknown, ", "))
	}
	return nil
}

// objectJSON is the policy as generic JSON, the way the API server decodes it, without status.
func objectJSON(p any, name string) (map[string]any, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode policy %s: %w", name, err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("decode policy %s: %w", name, err)
	}
	delete(obj, "status")
	return obj, nil
}

// unknownFields lists the paths of object fields the schema does not declare. metadata is
// the API server's own and skipped, as are maps (additionalProperties) and open objects.
func unknownFields(s *spec.Schema, v any, path string) []string {
	if s == nil {
		return nil
	}
	if b, _ := s.Extensions.GetBool("x-kubernetes-preserve-unknown-fields"); b {
		return nil
	}
	var out []string
	switch t := v.(type) {
	case map[string]any:
		if path == ".metadata" {
			return nil
		}
		if s.AdditionalProperties != nil {
			for k, val := range t {
				out = append(out, unknownFields(s.AdditionalProperties.Schema, val, path+"."+k)...)
			}
			return out
		}
		for k, val := range t {
			ps, ok := s.Properties[k]
			if !ok {
				out = append(out, path+"."+k)
				continue
			}
			out = append(out, unknownFields(&ps, val, path+"."+k)...)
		}
	case []any:
		if s.Items == nil || s.Items.Schema == nil {
			return nil
		}
		for i, val := range t {
			out = append(out, unknownFields(s.Items.Schema, val, fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return out
}
