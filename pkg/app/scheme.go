package app

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

func eventScheme() *runtime.Scheme { return scheme.Scheme }
