#!/usr/bin/env bash
# Builds, once, a CRD-only Kubernetes API server (k8s.io/apiextensions-apiserver, v1.36 from
# Debian sid) with the wrapper in e2e/crdserver/, and caches it at $CACHE/bin/crd-apiserver.
# e2e/test_cel.py runs it to check Drover's CRDs (CEL rules, server-side apply) as a current
# server sees them: the bed's kube-apiserver 1.20 drops CEL rules.
#
# Nothing from sid is installed: the Go toolchain (golang-1.27-go) and the golang-*-dev
# source packages are downloaded with apt from a sid source list kept in a private apt dir
# ($CACHE/sid-apt), cached as .deb files ($CACHE/sid-debs), unpacked with `dpkg -x` into a
# scratch tree and built in GOPATH mode (GO111MODULE=off, no network). The scratch tree is
# removed afterwards; the Go build cache ($CACHE/crdserver-gocache, ~1 GB) is kept so that a
# wrapper change rebuilds in seconds. Rebuilds only when the binary is missing or the wrapper
# (or BUILD_REV) changed.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${DROVER_CACHE:-$HOME/.cache/drover}"
BIN="$CACHE/bin/crd-apiserver"
STAMP="$BIN.source-sha256"
APTDIR="$CACHE/sid-apt"
DEBS="$CACHE/sid-debs"
WORK="$CACHE/crdserver-build"
# The roots of the build; apt resolves the rest (about 320 golang-* packages, ~310 MB).
ROOTS=(golang-k8s-apiextensions-apiserver-dev golang-k8s-apiserver-dev golang-1.27-go golang-1.27-src)
GOVER=1.27
log() { printf '[crd-apiserver] %s\n' "$*" >&2; }

# Bump BUILD_REV when a change here must rebuild the binary.
BUILD_REV=1
src_sum=$( (cat "$HERE/crdserver/main.go"; echo "rev=$BUILD_REV go=$GOVER ${ROOTS[*]}") \
  | sha256sum | cut -d' ' -f1)
if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$src_sum" ]; then
  log "cached at $BIN"
  exit 0
fi

log "building $BIN (once: ~320 MB of debs; a cold build is ~10 CPU-minutes)"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/preferences.d" \
  "$DEBS" "$CACHE/bin"
cat > "$APTDIR/sid.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
: > "$APTDIR/status" # an empty dpkg status: resolve the full closure, install nothing
APT_OPTS=(
  -o "Dir::Etc::sourcelist=$APTDIR/sid.sources" -o "Dir::Etc::sourceparts=-"
  -o "Dir::Etc::preferencesparts=$APTDIR/preferences.d"
  -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::State::status=$APTDIR/status"
  -o "Dir::Cache=$APTDIR/cache" -o "Dir::Cache::archives=$APTDIR/cache/archives"
  -o "APT::Architecture=$(dpkg --print-architecture)" -o "APT::Sandbox::User=root"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false"
)

log "apt-get update (sid, private lists in $APTDIR)"
apt-get "${APT_OPTS[@]}" -qq update >&2

# The golang-* packages of the roots' dependency closure (the others are C libraries and
# tools that the build does not use).
mapfile -t pkgs < <(apt-get "${APT_OPTS[@]}" -s install --no-install-recommends "${ROOTS[@]}" \
  | awk '/^Inst /{print $2}' | grep '^golang-')
[ ${#pkgs[@]} -gt 0 ] || { log "apt resolved no packages"; exit 1; }
for p in golang-k8s-apiextensions-apiserver-dev golang-k8s-apiserver-dev "golang-$GOVER-go"; do
  log "  $p $(apt-cache "${APT_OPTS[@]}" policy "$p" | awk '/Candidate:/{print $2}')"
done

# Exact file names of the current candidates; download only the missing ones.
mapfile -t files < <(apt-get "${APT_OPTS[@]}" --print-uris download "${pkgs[@]}" | awk '{print $2}')
missing=()
for i in "${!pkgs[@]}"; do
  [ -s "$DEBS/${files[$i]}" ] || missing+=("${pkgs[$i]}")
done
log "${#pkgs[@]} packages, ${#missing[@]} to download into $DEBS"
if [ ${#missing[@]} -gt 0 ]; then
  (cd "$DEBS" && apt-get "${APT_OPTS[@]}" -qq download "${missing[@]}" >&2)
fi

rm -rf "$WORK"
mkdir -p "$WORK/root" "$WORK/gopath/src/drover.io/crdserver"
log "unpacking ${#files[@]} packages with dpkg -x"
for f in "${files[@]}"; do
  dpkg -x "$DEBS/$f" "$WORK/root"
done
cp "$HERE/crdserver/main.go" "$WORK/gopath/src/drover.io/crdserver/"

GOROOT_DIR="$WORK/root/usr/lib/go-$GOVER"
log "go build ($("$GOROOT_DIR/bin/go" version | cut -d' ' -f3), GOPATH mode)"
start=$SECONDS
(
  cd "$WORK/gopath/src/drover.io/crdserver"
  env -u GOFLAGS GOROOT="$GOROOT_DIR" GOPATH="$WORK/gopath:$WORK/root/usr/share/gocode" \
    GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 GOCACHE="$CACHE/crdserver-gocache" \
    "$GOROOT_DIR/bin/go" build -trimpath -ldflags='-s -w' -o "$BIN.tmp" . 2>&1 \
    | sed -u 's/^/[crd-apiserver build] /' >&2
  exit "${PIPESTATUS[0]}"
)
mv "$BIN.tmp" "$BIN"
echo "$src_sum" > "$STAMP"
rm -rf "$WORK"
log "built in $((SECONDS - start)) s: $BIN ($(du -m "$BIN" | cut -f1) MB)"
