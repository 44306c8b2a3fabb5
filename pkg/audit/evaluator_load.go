package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	slim_metav1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"
	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/policy/api"
	"github.com/cilium/cilium/pkg/policy/types"
	policyutils "github.com/cilium/cilium/pkg/policy/utils"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/recommender/recommender/pkg/flows"
)

// Allow-localhost modes, as Cilium's --allow-localhost option on Kubernetes.
const (
	// AllowLocalhostAlways: the node's own stack may always reach its local endpoints (Cilium's
	// "auto", which means "always" on Kubernetes). The default.
	AllowLocalhostAlways = "always"
	// AllowLocalhostPolicy: host traffic to endpoints needs a rule like any other peer.
	AllowLocalhostPolicy = "policy"
)

// Config describes the cluster the policies are evaluated for.
type Config struct {
	// ClusterName is the Cilium cluster name. Cilium scopes peer selectors that name no
	// cluster to the local cluster (unless PolicyAnyCluster), the "cluster" entity means the
	// endpoints of this cluster, flow peers whose labels name no cluster are taken to be in
	// it, and workloads of other clusters are never policy subjects here.
	//
	// Empty means the local cluster is not known (a daemon started without --cluster-name):
	// the set is evaluated as for a single cluster, every workload is local and selectors are
	// not scoped to a cluster. A ClusterMesh needs the name.
	ClusterName string
	// PolicyAnyCluster mirrors the agent option policy-default-local-cluster=false, the
	// default of Cilium 1.18 and older: a peer selector that names no cluster selects
	// endpoints of every cluster of the mesh. False is Cilium 1.19+: the local cluster only.
	PolicyAnyCluster bool
	// AllowLocalhost is "always" (default) or "policy".
	AllowLocalhost string
}

// policyCluster is the cluster name Cilium's parser scopes selectors to, as the agent's
// cmtypes.LocalClusterNameForPolicies: "" (any cluster) under policy-default-local-cluster=false.
func (c Config) policyCluster() string {
	if c.PolicyAnyCluster {
		return ""
	}
	return c.ClusterName
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	switch c.AllowLocalhost {
	case "":
		c.AllowLocalhost = AllowLocalhostAlways
	case AllowLocalhostAlways, AllowLocalhostPolicy:
	default:
		return fmt.Errorf("allow-localhost %q: want %s or %s", c.AllowLocalhost, AllowLocalhostAlways, AllowLocalhostPolicy)
	}
	return nil
}

// Policy kinds as they appear in YAML and in RuleRef.Kind.
const (
	KindCCNP = "CiliumClusterwideNetworkPolicy"
	KindCNP  = "CiliumNetworkPolicy"
)

// ErrInvalidPolicy wraps every error about a policy object that Cilium would reject; the
// policy is left out of the set and the error names it.
var ErrInvalidPolicy = errors.New("invalid policy")

// PolicySet is a compiled, immutable set of CCNPs and CNPs, indexed by the endpoints their
// subjects select. Build it with NewPolicySet and Add*, then hand it to an Evaluator; do not add
// policies after the first Evaluate (the selection cache would be stale). Evaluate is safe for
// concurrent use.
type PolicySet struct {
	cfg      Config
	policies int
	entries  []*entry
	warnings []string
	idx      *index
}

// NewPolicySet returns an empty set. An invalid cfg is reported by Add*.
func NewPolicySet(cfg Config) *PolicySet {
	cfgErr := cfg.Validate()
	s := &PolicySet{cfg: cfg}
	s.idx = newIndex(s)
	if cfgErr != nil {
		s.warnings = append(s.warnings, cfgErr.Error())
		s.cfg.AllowLocalhost = AllowLocalhostAlways
	}
	return s
}

// Len returns the number of policy objects in the set.
func (s *PolicySet) Len() int { return s.policies }

// Rules returns the number of compiled rules (one per ingress/egress/deny rule of each spec).
func (s *PolicySet) Rules() int { return len(s.entries) }

// Warnings lists constructs the evaluator ignores or approximates, one line per occurrence,
// naming the rule.
func (s *PolicySet) Warnings() []string { return s.warnings }

// AddCCNP parses a CiliumClusterwideNetworkPolicy as the agent does and adds its rules. p is not
// modified.
func (s *PolicySet) AddCCNP(p *ciliumv2.CiliumClusterwideNetworkPolicy) error {
	p = p.DeepCopy() // Parse sanitizes, and sanitizing mutates the spec
	rules, err := p.Parse(slog.New(slog.DiscardHandler), s.cfg.policyCluster())
	if err != nil {
		return fmt.Errorf("%s/%s: %w: %w", KindCCNP, p.Name, ErrInvalidPolicy, err)
	}
	s.add(KindCCNP, "", p.Name, p.Spec != nil, rules)
	return nil
}

// AddCNP parses a CiliumNetworkPolicy as the agent does (selectors scoped to its namespace) and
// adds its rules. p is not modified.
func (s *PolicySet) AddCNP(p *ciliumv2.CiliumNetworkPolicy) error {
	p = p.DeepCopy()
	if p.Namespace == "" {
		// The API server defaults it; files often leave it out.
		p.Namespace = "default"
	}
	rules, err := p.Parse(slog.New(slog.DiscardHandler), s.cfg.policyCluster())
	if err != nil {
		return fmt.Errorf("%s/%s/%s: %w: %w", KindCNP, p.Namespace, p.Name, ErrInvalidPolicy, err)
	}
	s.add(KindCNP, p.Namespace, p.Name, p.Spec != nil, rules)
	return nil
}

// add compiles the parsed rules of one policy object. Parse returns the spec's rule first, then
// one per entry of specs, which is how RuleRef.Spec is numbered.
func (s *PolicySet) add(kind, ns, name string, hasSpec bool, rules api.Rules) {
	s.policies++
	for i, r := range rules {
		spec := i
		if hasSpec {
			spec = i - 1
		}
		base := RuleRef{Kind: kind, Namespace: ns, Name: name, Spec: spec}
		s.addRule(base, r)
	}
}

func (s *PolicySet) warn(ref RuleRef, format string, args ...any) {
	s.warnings = append(s.warnings, ref.String()+": "+fmt.Sprintf(format, args...))
}

// addRule turns one parsed api.Rule into entries with Cilium's RulesToPolicyEntries, which emits
// one entry per rule in the order ingress, ingressDeny, egress, egressDeny.
func (s *PolicySet) addRule(base RuleRef, r *api.Rule) {
	if r.NodeSelector.LabelSelector != nil {
		base.Section, base.Index = "nodeSelector", 0
		s.warn(base, "host policies (nodeSelector) are not evaluated: flows are evaluated for pods only")
		return
	}
	s.expandClusterEntity(r)
	entries := policyutils.RulesToPolicyEntries(api.Rules{r})
	type section struct {
		name string
		n    int
	}
	sections := []section{{"ingress", len(r.Ingress)}, {"ingressDeny", len(r.IngressDeny)}, {"egress", len(r.Egress)}, {"egressDeny", len(r.EgressDeny)}}
	k := 0
	for _, sec := range sections {
		for i := range sec.n {
			ref := base
			ref.Section, ref.Index = sec.name, i
			if k >= len(entries) {
				return
			}
			e := s.compile(ref, entries[k])
			k++
			s.unsupported(ref, r, sec.name, i, e)
			s.entries = append(s.entries, e)
		}
	}
}

// expandClusterEntity replaces the "cluster" entity with what it means, so the set does not
// depend on api.InitEntities, a process-wide map the agent fills at start: the cluster's
// reserved identities plus every endpoint labelled with the cluster name.
func (s *PolicySet) expandClusterEntity(r *api.Rule) {
	clusterES := api.NewESFromLabels(labels.NewLabel(clusterLabelKey, s.cfg.ClusterName, labels.LabelSourceK8s))
	if s.cfg.ClusterName == "" {
		// One cluster, every workload in it: any endpoint with a namespace (not world).
		clusterES = api.NewESFromMatchRequirements(nil, []slim_metav1.LabelSelectorRequirement{
			{Key: "k8s:" + flows.LabelNamespace, Operator: slim_metav1.LabelSelectorOpExists}})
	}
	expand := func(ents api.EntitySlice) (api.EntitySlice, bool) {
		if !slices.Contains(ents, api.EntityCluster) {
			return ents, false
		}
		out := make(api.EntitySlice, 0, len(ents)+len(clusterEntities))
		for _, e := range ents {
			if e != api.EntityCluster {
				out = append(out, e)
			}
		}
		return append(out, clusterEntities...), true
	}
	var ok bool
	for i := range r.Ingress {
		c := &r.Ingress[i].IngressCommonRule
		if c.FromEntities, ok = expand(c.FromEntities); ok {
			c.FromEndpoints = append(c.FromEndpoints, clusterES)
		}
	}
	for i := range r.IngressDeny {
		c := &r.IngressDeny[i].IngressCommonRule
		if c.FromEntities, ok = expand(c.FromEntities); ok {
			c.FromEndpoints = append(c.FromEndpoints, clusterES)
		}
	}
	for i := range r.Egress {
		c := &r.Egress[i].EgressCommonRule
		if c.ToEntities, ok = expand(c.ToEntities); ok {
			c.ToEndpoints = append(c.ToEndpoints, clusterES)
		}
	}
	for i := range r.EgressDeny {
		c := &r.EgressDeny[i].EgressCommonRule
		if c.ToEntities, ok = expand(c.ToEntities); ok {
			c.ToEndpoints = append(c.ToEndpoints, clusterES)
		}
	}
}

// clusterEntities are the reserved identities inside the cluster (Cilium's clusterSelectors).
var clusterEntities = api.EntitySlice{api.EntityHost, api.EntityRemoteNode, api.EntityInit, api.EntityIngress,
	api.EntityHealth, api.EntityUnmanaged, api.EntityKubeAPIServer}

// unsupported warns about constructs that flows cannot show, and neutralizes those that would
// otherwise widen a rule: a toServices-only rule converts to an empty peer list, which Cilium's
// entry type reads as "any peer" once ports are given; the agent resolves services instead,
// which we cannot, so such a rule selects no peer here.
func (s *PolicySet) unsupported(ref RuleRef, r *api.Rule, section string, i int, e *entry) {
	switch section {
	case "egress":
		eg := r.Egress[i]
		if len(eg.ToServices) > 0 {
			s.warn(ref, "toServices is not evaluated (needs the cluster's services); the rule matches no peer")
			if len(e.l3) == 0 && len(e.fqdns) == 0 {
				e.l3None = true
			}
		}
		if len(eg.ToGroups) > 0 {
			s.warn(ref, "toGroups is not evaluated (needs the cloud provider's addresses)")
		}
		if len(eg.ToRequires) > 0 {
			s.warn(ref, "toRequires is ignored")
		}
		if eg.Authentication != nil {
			s.warn(ref, "authentication is ignored")
		}
	case "ingress":
		in := r.Ingress[i]
		if len(in.FromGroups) > 0 {
			s.warn(ref, "fromGroups is not evaluated (needs the cloud provider's addresses)")
		}
		if len(in.FromRequires) > 0 {
			s.warn(ref, "fromRequires is ignored")
		}
		if in.Authentication != nil {
			s.warn(ref, "authentication is ignored")
		}
	}
	for _, pm := range e.ports {
		if pm.named != "" {
			s.warn(ref, "named port %q cannot be resolved from flows; matching flows are reported as unknown", pm.named)
		}
	}
	if e.tls {
		s.warn(ref, "TLS interception and serverNames are not evaluated; the port rule is treated as plain L4")
	}
}

// compile turns one Cilium policy entry into the evaluator's form.
func (s *PolicySet) compile(ref RuleRef, pe *types.PolicyEntry) *entry {
	e := &entry{
		ref:         ref,
		subject:     pe.Subject,
		ingress:     pe.Ingress,
		deny:        pe.IsDeny(),
		defaultDeny: pe.DefaultDeny,
	}
	// Nil L3 selects nothing; an empty L3 means any peer when ports are given (and nothing
	// otherwise), as in Cilium's mergeL4Filter.
	switch {
	case pe.L3 == nil, len(pe.L3) == 0 && pe.L4.Len() == 0:
		e.l3None = true
	case len(pe.L3) == 0:
		e.l3Any = true
	}
	for _, sel := range pe.L3 {
		if f, ok := sel.GetFQDNSelector(); ok {
			re, err := fqdnRegexp(api.FQDNSelector{MatchName: f.MatchName, MatchPattern: f.MatchPattern})
			if err != nil {
				s.warn(ref, "toFQDNs %s: %v", f.String(), err)
				continue
			}
			e.fqdns = append(e.fqdns, re)
			continue
		}
		e.l3 = append(e.l3, sel)
	}
	for _, pr := range pe.L4 {
		var l7 *l7Match
		if pr.Rules != nil && !pr.Rules.IsEmpty() {
			l7 = s.compileL7(ref, pr.Rules)
		}
		if pr.TerminatingTLS != nil || pr.OriginatingTLS != nil || len(pr.ServerNames) > 0 || pr.Listener != nil {
			e.tls = true
		}
		for _, pp := range pr.Ports {
			e.ports = append(e.ports, compilePort(pp, l7))
		}
	}
	return e
}

func (s *PolicySet) compileL7(ref RuleRef, rules *api.L7Rules) *l7Match {
	m := &l7Match{}
	for _, h := range rules.HTTP {
		hr := httpMatch{headers: len(h.Headers) > 0 || len(h.HeaderMatches) > 0, text: httpRuleText(h)}
		var err error
		if hr.method, err = fullRegexp(h.Method); err == nil {
			if hr.path, err = fullRegexp(h.Path); err == nil {
				hr.host, err = fullRegexp(h.Host)
			}
		}
		if err != nil {
			s.warn(ref, "http rule %s: %v", hr.text, err)
			continue
		}
		m.http = append(m.http, hr)
	}
	for _, d := range rules.DNS {
		re, err := fqdnRegexp(api.FQDNSelector(d))
		if err != nil {
			s.warn(ref, "dns rule %+v: %v", d, err)
			continue
		}
		m.dns = append(m.dns, re)
	}
	m.hasHTTP, m.hasDNS = len(rules.HTTP) > 0, len(rules.DNS) > 0
	return m
}

func httpRuleText(h api.PortRuleHTTP) string {
	var parts []string
	if h.Method != "" {
		parts = append(parts, "method="+h.Method)
	}
	if h.Path != "" {
		parts = append(parts, "path="+h.Path)
	}
	if h.Host != "" {
		parts = append(parts, "host="+h.Host)
	}
	if len(parts) == 0 {
		return "{}"
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// fullRegexp compiles an HTTP rule field the way Envoy applies it: the whole value must match.
// An empty field matches anything.
func fullRegexp(expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, nil
	}
	return regexp.Compile("^(?:" + expr + ")$")
}

// fqdnRegexp compiles a matchName/matchPattern with Cilium's own translation; names are matched
// lowercase and fully qualified (trailing dot).
func fqdnRegexp(f api.FQDNSelector) (*regexp.Regexp, error) {
	f.MatchName = strings.ToLower(f.MatchName)
	f.MatchPattern = strings.ToLower(f.MatchPattern)
	return f.ToRegex()
}

// Decoded holds the Cilium policies read from YAML.
type Decoded struct {
	CCNPs []*ciliumv2.CiliumClusterwideNetworkPolicy
	CNPs  []*ciliumv2.CiliumNetworkPolicy
	// Skipped names documents that are not Cilium policies ("file.yaml#2: kind ConfigMap").
	Skipped []string
	// Rejected lists the policy documents that could not be decoded, one error each; the
	// other documents of the same file and directory are still read.
	Rejected []*DocError

	// ccnpAt and cnpAt locate CCNPs[i] and CNPs[i] ("file.yaml#2") when DecodeYAML read
	// them, so Build names the document of a policy Cilium would reject.
	ccnpAt, cnpAt []string
}

// DocError is one policy document the loader rejected: where it is, the field at fault
// when it can be told, and why. A repository of hand-written policies often holds a few
// documents this version of Cilium no longer accepts (a top-level description, Kafka rules);
// each is reported on its own and the others are evaluated.
type DocError struct {
	// Where is "file.yaml#2": the file and the 1-based document index in it.
	Where string
	// Policy is "Kind/name" or "Kind/namespace/name" when the document got that far.
	Policy string
	// Field is the path of the offending field ("spec.ingress[0].toPorts[0].rules.kafka"),
	// or "" when the error does not point at one. Several unknown fields are all listed,
	// comma-separated, so one run names everything to fix in the document.
	Field string
	Err   error
}

func (e *DocError) Error() string {
	if e.Where == "" && e.Policy == "" && e.Field == "" {
		return e.Err.Error()
	}
	s := e.Where
	if e.Policy != "" {
		s += " (" + e.Policy + ")"
	}
	if e.Field != "" {
		// The decoder's own message names only the first field, without its place.
		return s + ": unknown field " + e.Field + " (not in the schema of this Cilium version: remove or fix it)"
	}
	return s + ": " + e.Err.Error()
}

func (e *DocError) Unwrap() error { return e.Err }

// DecodeYAML reads multi-document YAML (or JSON) holding CCNPs, CNPs and their List kinds.
// Fields unknown to the CRD are errors: a typo in a hand-edited policy must not silently widen
// or narrow it. name locates errors ("file.yaml#2: ..."). A document that cannot be decoded
// is added to into.Rejected and reading goes on; the returned error joins those documents'
// errors, or is the read error that stopped the file.
func DecodeYAML(r io.Reader, name string, into *Decoded) error {
	yr := k8syaml.NewYAMLReader(bufio.NewReader(r))
	var errs []error
	for doc := 1; ; doc++ {
		raw, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return errors.Join(errs...)
		}
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("%s#%d: read yaml: %w", name, doc, err))...)
		}
		if len(bytes.TrimSpace(raw)) == 0 || isOnlyComments(raw) {
			continue
		}
		where := fmt.Sprintf("%s#%d", name, doc)
		if derr := decodeDoc(raw, where, into); derr != nil {
			into.Rejected = append(into.Rejected, derr)
			errs = append(errs, derr)
		}
	}
}

// decodeDoc decodes one document into into, or says why it cannot.
func decodeDoc(raw []byte, where string, into *Decoded) *DocError {
	var tm struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return &DocError{Where: where, Err: err}
	}
	policy := tm.Kind + "/" + tm.Metadata.Name
	if tm.Metadata.Namespace != "" {
		policy = tm.Kind + "/" + tm.Metadata.Namespace + "/" + tm.Metadata.Name
	}
	strict := func(into any) *DocError {
		if err := unmarshalStrict(raw, into); err != nil {
			return &DocError{Where: where, Policy: policy, Field: unknownFieldPath(raw, into, err), Err: err}
		}
		return nil
	}
	switch tm.Kind {
	case KindCCNP:
		p := &ciliumv2.CiliumClusterwideNetworkPolicy{}
		if err := strict(p); err != nil {
			return err
		}
		into.CCNPs = append(into.CCNPs, p)
		into.ccnpAt = append(into.ccnpAt, where)
	case KindCNP:
		p := &ciliumv2.CiliumNetworkPolicy{}
		if err := strict(p); err != nil {
			return err
		}
		into.CNPs = append(into.CNPs, p)
		into.cnpAt = append(into.cnpAt, where)
	case KindCCNP + "List":
		l := &ciliumv2.CiliumClusterwideNetworkPolicyList{}
		if err := strict(l); err != nil {
			return err
		}
		for i := range l.Items {
			into.CCNPs = append(into.CCNPs, &l.Items[i])
			into.ccnpAt = append(into.ccnpAt, fmt.Sprintf("%s items[%d]", where, i))
		}
	case KindCNP + "List":
		l := &ciliumv2.CiliumNetworkPolicyList{}
		if err := strict(l); err != nil {
			return err
		}
		for i := range l.Items {
			into.CNPs = append(into.CNPs, &l.Items[i])
			into.cnpAt = append(into.cnpAt, fmt.Sprintf("%s items[%d]", where, i))
		}
	default:
		into.Skipped = append(into.Skipped, fmt.Sprintf("%s: kind %q", where, tm.Kind))
	}
	return nil
}

// unmarshalStrict is yaml.UnmarshalStrict that returns an error where a Cilium type's own
// decoder panics on what the CRD's schema would refuse: ICMPField's UnmarshalJSON dereferences
// a null ICMP type (`icmps: [{fields: [null]}]`, found by FuzzPolicies). The API server never
// hands such a policy out, but a file given to `check` may hold anything.
func unmarshalStrict(raw []byte, into any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the policy's decoder failed on it (%v): a field holds null or a value of the wrong type", r)
		}
	}()
	return yaml.UnmarshalStrict(raw, into)
}

// unknownFieldRe finds the field name in encoding/json's DisallowUnknownFields error.
var unknownFieldRe = regexp.MustCompile(`unknown field "([^"]+)"`)

// unknownFieldPath returns the paths of the unknown fields of a document ("description,
// spec.ingress[0].toPorts[0].rules.kafka"), found by walking it against the Go type it was
// decoded into: encoding/json names only the first field, not where it is. "" when err is
// not about an unknown field; the bare field name when the walk cannot place it (types with
// their own UnmarshalJSON).
func unknownFieldPath(raw []byte, target any, err error) string {
	m := unknownFieldRe.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	js, jerr := yaml.YAMLToJSON(raw)
	if jerr != nil {
		return m[1]
	}
	var doc any
	if json.Unmarshal(js, &doc) != nil {
		return m[1]
	}
	var paths []string
	findUnknown(doc, reflect.TypeOf(target), "", &paths)
	if len(paths) == 0 {
		return m[1]
	}
	return strings.Join(paths, ", ")
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// findUnknown walks v (decoded JSON) along t and appends the path of every key t has no
// field for.
func findUnknown(v any, t reflect.Type, path string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return
	}
	switch x := v.(type) {
	case map[string]any:
		switch t.Kind() {
		case reflect.Struct:
			fields := jsonFields(t)
			for _, k := range slices.Sorted(maps.Keys(x)) {
				if ft, ok := fields[k]; ok {
					findUnknown(x[k], ft, joinPath(path, k), out)
				} else {
					*out = append(*out, joinPath(path, k))
				}
			}
		case reflect.Map:
			for _, k := range slices.Sorted(maps.Keys(x)) {
				findUnknown(x[k], t.Elem(), joinPath(path, k), out)
			}
		}
	case []any:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, e := range x {
				findUnknown(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), out)
			}
		}
	}
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// jsonFields maps the JSON names of a struct's fields to their types, with embedded and
// ",inline" structs flattened as encoding/json and sigs.k8s.io/yaml do.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if (f.Anonymous && name == "") || strings.Contains(opts, "inline") {
			if ft.Kind() == reflect.Struct {
				maps.Copy(out, jsonFields(ft))
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func isOnlyComments(raw []byte) bool {
	for line := range bytes.Lines(raw) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' && !bytes.Equal(line, []byte("---")) {
			return false
		}
	}
	return true
}

// LoadDir decodes every *.yaml, *.yml and *.json file under dir (recursively, in lexical
// order). Documents that cannot be decoded are listed in Decoded.Rejected, each with its file,
// document index and field path, and do not stop the others; the error is for a directory or
// file that cannot be read.
func LoadDir(dir string) (*Decoded, error) {
	d := &Decoded{}
	err := filepath.WalkDir(dir, func(path string, de os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			return nil
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
		default:
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		rejected := len(d.Rejected)
		if err := DecodeYAML(f, path, d); err != nil && len(d.Rejected) == rejected {
			// Not a rejected document but a read error: the rest of the file is unknown.
			d.Rejected = append(d.Rejected, &DocError{Where: path, Err: err})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load policies from %s: %w", dir, err)
	}
	return d, nil
}

// Build compiles the decoded policies into a set. Invalid policies are left out and reported
// together in the error (each a *DocError wrapping ErrInvalidPolicy, located when DecodeYAML
// read it); the set holds the valid ones.
func (d *Decoded) Build(cfg Config) (*PolicySet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := NewPolicySet(cfg)
	var errs []error
	at := func(locs []string, i int) string {
		if i < len(locs) {
			return locs[i]
		}
		return ""
	}
	for i, p := range d.CCNPs {
		if err := s.AddCCNP(p); err != nil {
			errs = append(errs, &DocError{Where: at(d.ccnpAt, i), Err: err}) // err names the policy
		}
	}
	for i, p := range d.CNPs {
		if err := s.AddCNP(p); err != nil {
			errs = append(errs, &DocError{Where: at(d.cnpAt, i), Err: err})
		}
	}
	return s, errors.Join(errs...)
}

// Label keys the evaluator adds to a workload's labels: flows carry the pod labels only, and
// Cilium's selectors also look at the namespace and cluster.
const (
	clusterLabelKey       = "io.cilium.k8s.policy.cluster"
	namespaceNameLabelKey = "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"
)

// workloadLabels returns the identity labels Cilium would give a pod of the workload: its
// stable labels plus namespace, namespace name label (Kubernetes sets kubernetes.io/metadata.name
// on every namespace) and cluster: the cluster its labels name (issue 16: flows of a
// ClusterMesh carry it), else the local one.
func workloadLabels(p *flows.Peer, cluster string) labels.LabelArray {
	if c := p.Labels.Cluster(); c != "" {
		cluster = c
	}
	out := make(labels.LabelArray, 0, len(p.Labels)+3)
	for _, l := range p.Labels.WithoutCluster() {
		lbl := labels.ParseLabel(l)
		if lbl.Source == labels.LabelSourceUnspec {
			lbl.Source = labels.LabelSourceK8s
		}
		out = append(out, lbl)
	}
	out = append(out,
		labels.NewLabel(flows.LabelNamespace, p.Namespace, labels.LabelSourceK8s),
		labels.NewLabel(namespaceNameLabelKey, p.Namespace, labels.LabelSourceK8s),
	)
	// Without a local cluster name and without the label on the flow the cluster is
	// unknown; the label is left out rather than guessed (see Config.ClusterName).
	if cluster != "" {
		out = append(out, labels.NewLabel(clusterLabelKey, cluster, labels.LabelSourceK8s))
	}
	return out.Sort()
}
