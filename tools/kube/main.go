// Command kube is a busybox-style launcher for the upstream Kubernetes control plane.
//
// It links kube-apiserver, kube-controller-manager, kube-scheduler and etcd from their
// upstream Go modules into one binary and runs exactly one of them per process, chosen by
// argv[0] (symlinks) or by the first argument. One component per process avoids the global
// state (feature gates, klog, metrics registries) that the components share when run in-process.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	name, args := filepath.Base(os.Args[0]), os.Args[1:]
	if name == "kube" && len(args) > 0 { // "kube kube-apiserver --flags..."
		name, args = args[0], args[1:]
	}
	switch name {
	case "kube-apiserver":
		c := apiserver.NewAPIServerCommand()
		c.SetArgs(args)
		os.Exit(cli.Run(c))
	case "kube-controller-manager":
		c := kcm.NewControllerManagerCommand()
		c.SetArgs(args)
		os.Exit(cli.Run(c))
	case "kube-scheduler":
		c := scheduler.NewSchedulerCommand()
		c.SetArgs(args)
		os.Exit(cli.Run(c))
	case "etcd":
		etcdmain.Main(append([]string{"etcd"}, args...))
	default:
		fmt.Fprintln(os.Stderr, "usage: kube {kube-apiserver|kube-controller-manager|kube-scheduler|etcd} [flags]")
		os.Exit(2)
	}
}
