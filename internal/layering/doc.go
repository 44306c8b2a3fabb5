// Package layering tests the direction of imports: the pipeline's stages import only stages to
// their left (flows -> aggregate -> synth -> audit/lifecycle -> auditor -> cluster/gitops -> daemon -> cmd),
// and the streaming stages stay free of Cilium's heavy policy and CRD packages.
package layering
