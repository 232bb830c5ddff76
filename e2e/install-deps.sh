#!/usr/bin/env bash
# Installs everything the sandbox needs, idempotently: Debian packages, a cached
# kube-apiserver 1.20.2 built from Debian's source package, and a Python venv with moto.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${DROVER_CACHE:-$HOME/.cache/drover}"
mkdir -p "$CACHE"
log() { printf '[install] %s\n' "$*" >&2; }

need_pkgs=(golang-go rsync jq etcd-server golang-github-modern-go-reflect2-dev openssl python3-venv curl lua5.4 tmux prometheus postgresql-15)
# Some images ship kubectl from another package, which conflicts with kubernetes-client.
command -v kubectl >/dev/null 2>&1 || need_pkgs+=(kubernetes-client)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

src_list=/etc/apt/sources.list.d/drover-deb-src.sources
if [ ! -f "$src_list" ]; then
  log "adding deb-src twin of the Debian sources entry"
  # Copy each 'Types: deb' stanza of debian.sources as 'Types: deb-src'.
  sed -n '/^Types: deb$/,/^$/p' /etc/apt/sources.list.d/debian.sources \
    | sed 's/^Types: deb$/Types: deb-src/' > "$src_list"
  need_update=1
fi

if [ ${#missing[@]} -gt 0 ] || [ -n "${need_update:-}" ]; then
  log "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  DEBIAN_FRONTEND=noninteractive dpkg --configure -a >/dev/null
fi

# kube-apiserver, built once and cached outside the clone.
APISERVER="$CACHE/bin/kube-apiserver"
if [ ! -x "$APISERVER" ]; then
  log "building kube-apiserver 1.20.2 from Debian source (about 6 min on 2 cores, once)"
  mkdir -p "$CACHE/src" "$CACHE/bin"
  cd "$CACHE/src"
  if ! ls -d kubernetes-1.20*/ >/dev/null 2>&1; then
    apt-get source -qq kubernetes >/dev/null
  fi
  tree=$(ls -d kubernetes-1.20*/ | head -1)
  cd "$tree"
  # The vendored reflect2 1.0.1 segfaults under Go >= 1.18 on custom-resource writes.
  rm -rf vendor/github.com/modern-go/reflect2
  mkdir -p vendor/github.com/modern-go/reflect2
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2/. vendor/github.com/modern-go/reflect2/
  rm -f vendor/github.com/modern-go/reflect2/go.mod
  mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
  GOPATH=$PWD/.go CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPROXY=off \
    make WHAT=cmd/kube-apiserver 2>&1 | sed -u 's/^/[kube-apiserver build] /' >&2
  cp _output/bin/kube-apiserver "$APISERVER.tmp"
  mv "$APISERVER.tmp" "$APISERVER"
  log "kube-apiserver cached at $APISERVER"
fi

# Python venv for the AWS emulator, cached outside the clone.
VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import moto, flask, pytest, helm_python, pg8000' 2>/dev/null; then
  log "creating Python venv with moto[server], pytest, the Helm SDK and pg8000"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.2.5' 'pytest==9.2.0' 'helm-python-sdk==0.2.2' 'pg8000==1.31.6' >&2
fi
# CRD-only API server v1.36 for e2e/test_cel.py (CEL rules). A machine where it cannot be
# built still runs the rest: test_cel.py then skips and says why.
bash "$HERE/install-crdserver.sh" \
  || log "WARNING: crd-apiserver could not be built; e2e/test_cel.py will be skipped"
log "dependencies ready"
