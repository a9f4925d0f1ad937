"""Tools the deployment checks need, installed outside the repository when missing.

helm: `go install helm.sh/helm/v3/cmd/helm@HELM_VERSION` into `<cache>/helm-<version>/` (cache:
MOM_CACHE_DIR, else $XDG_CACHE_HOME/mom or ~/.cache/mom), once; it takes a few minutes the first
time. promtool: Debian's `prometheus` package, installed with apt-get when missing and allowed.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HELM_VERSION = "v3.22.0"
HELM_INSTALL_TIMEOUT_S = 1800
KUBERNETES_VERSION = "1.31.0"  # the cluster version the chart is rendered and validated for
REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "deploy" / "helm" / "mom"


def cache_root() -> Path:
    base = os.environ.get("MOM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mom")
    return Path(base)


def helm_binary() -> Path:
    """The pinned helm, built with `go install` on first use (serialised by a lock between sessions)."""
    target = cache_root() / f"helm-{HELM_VERSION}"
    helm = target / "helm"
    if helm.exists():
        return helm
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        pytest.fail(f"helm {HELM_VERSION} is not in {target} and `go` is not on PATH to install it "
                    f"(go install helm.sh/helm/v3/cmd/helm@{HELM_VERSION})")
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not helm.exists():
            env = {**os.environ, "GOBIN": str(target)}
            result = subprocess.run([go, "install", f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"], env=env,
                                    cwd=target, capture_output=True, text=True, timeout=HELM_INSTALL_TIMEOUT_S)
            if result.returncode != 0 or not helm.exists():
                pytest.fail(f"go install helm@{HELM_VERSION} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return helm


def promtool_binary() -> Path:
    """promtool from Debian's `prometheus` package; installed with apt-get (as root) when missing."""
    found = shutil.which("promtool")
    if found:
        return Path(found)
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.fail("promtool is not installed, and apt-get (as root) is not available to install it: "
                    "install Debian's `prometheus` package, which provides it")
    for argv in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "--no-install-recommends", "prometheus"]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if result.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    found = shutil.which("promtool")
    if not found:
        pytest.fail("the `prometheus` package installed no promtool")
    return Path(found)
