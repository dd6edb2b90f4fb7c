// Module promop pins the Prometheus Operator, whose module ships the
// monitoring.coreos.com CRDs the chart's manifests are checked against.
module github.com/lastcall/lastcall/test/tools/promop

go 1.26

require github.com/prometheus-operator/prometheus-operator v0.85.0
