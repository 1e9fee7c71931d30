#!/usr/bin/env bash
# Provisions tier T3's real Kubernetes control plane, once per machine: kube-apiserver and
# kube-controller-manager v1.20.2 built from Debian's `kubernetes` source package with
# Debian's Go, plus etcd from Debian's `etcd-server` (see ../../../shared/ENVIRONMENT.md).
# Only Debian packages and this file are used; the system's apt sources are not touched.
#
#   tests/kube/provision.sh           ensure the build exists (cold: 6-12 min on 2 cores),
#                                     then print its bin directory on stdout
#   tests/kube/provision.sh --check   print the bin directory if complete, else exit 1
#
# The cache lives outside the repository, keyed by the Kubernetes version and a hash of this
# script, so a changed recipe builds afresh: $FEDWALL_CACHE_ROOT (default /var/cache/fedwall)
# /kube-1.20.2-<hash>/bin. A marker file is written only once everything is in place, so an
# interrupted build is never used. Progress and timings go to stderr.
set -euo pipefail

KUBE_VERSION=1.20.2
GO_PACKAGE=golang-1.19-go
GO_BIN=/usr/lib/go-1.19/bin
# Build: Go, the source fetch and unpack (dpkg-dev), `make gen_openapi` (make, rsync), the
# fixed reflect2. Run time: etcd.
APT_PACKAGES=("$GO_PACKAGE" dpkg-dev make rsync golang-github-modern-go-reflect2-dev etcd-server)
# Debian's fixed reflect2 (1.0.2): the vendored 1.0.1 crashes under Go >= 1.18.
REFLECT2_DEBIAN=/usr/share/gocode/src/github.com/modern-go/reflect2

CACHE_ROOT=${FEDWALL_CACHE_ROOT:-/var/cache/fedwall}
RECIPE_HASH=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
CACHE=$CACHE_ROOT/kube-$KUBE_VERSION-$RECIPE_HASH
BIN=$CACHE/bin
MARKER=$CACHE/complete
BINARIES=(kube-apiserver kube-controller-manager etcd)

say() { printf 'provision: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Runs "$@" announcing it first and its duration after.
timed() {
  local what=$1; shift
  say "$what ..."
  local started=$SECONDS
  "$@"
  say "$what: done in $((SECONDS - started)) s"
}

is_complete() {
  [ -f "$MARKER" ] || return 1
  local binary
  for binary in "${BINARIES[@]}"; do
    [ -x "$BIN/$binary" ] || return 1
  done
}

case "${1:-}" in
  --check)
    if is_complete; then echo "$BIN"; exit 0; fi
    say "no complete build in $CACHE: run tests/kube/provision.sh as root (6-12 min)"
    exit 1 ;;
  "") ;;
  *) die "unknown argument '$1' (usage: provision.sh [--check])" ;;
esac

if is_complete; then
  say "kube-apiserver v$KUBE_VERSION: cached in $BIN"
  echo "$BIN"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the API servers needs root (Debian packages, $CACHE_ROOT)"
mkdir -p "$CACHE_ROOT"
# One build at a time per recipe, even with several work trees testing at once.
exec 9>"$CACHE.lock"
if ! flock -n 9; then
  say "another build of $CACHE is running; waiting for it"
  flock 9
fi
if is_complete; then
  say "kube-apiserver v$KUBE_VERSION: built meanwhile in $BIN"
  echo "$BIN"
  exit 0
fi

total_started=$SECONDS
say "building kube-apiserver and kube-controller-manager v$KUBE_VERSION into $CACHE" \
  "(6-12 min on 2 cores, the longer when other builds share them; once per machine)"

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  timed "refreshing Debian package lists" apt-get update -qq
  # The lock timeout: other work trees may be installing packages at the same moment.
  timed "installing Debian packages: ${missing[*]}" \
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
fi

WORK=$CACHE_ROOT/build-kube-$KUBE_VERSION-$RECIPE_HASH
rm -rf "$WORK" "$CACHE"
# Build trees of interrupted builds (a few GiB each): any whose lock nobody holds.
for stale in "$CACHE_ROOT"/build-kube-*; do
  [ -d "$stale" ] || continue
  lock=$CACHE_ROOT/${stale##*/build-}.lock
  if (exec 8>"$lock" && flock -n 8); then
    say "removing $stale, left by an interrupted build"
    rm -rf "$stale"
  fi
done
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/src"
BUILD_LOG=$WORK/build.log
on_exit() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    say "FAILED after $((SECONDS - total_started)) s; the build's output is in $BUILD_LOG; its end:"
    tail -n 40 "$BUILD_LOG" >&2 2>/dev/null || true
  fi
}
trap on_exit EXIT
: >"$BUILD_LOG"
# The commands' own output goes to the build log; its end is shown if the build fails.
logged() { "$@" >>"$BUILD_LOG" 2>&1; }

# A private source list: the system's apt configuration (its proxy, its keyring) applies,
# its sources stay as they are.
echo "deb-src http://deb.debian.org/debian bookworm main" >"$WORK/apt/sources.list"
apt_private=(
  -o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache"
  -o APT::Sandbox::User=root
)
timed "fetching Debian's source list (bookworm, private to this build)" \
  logged apt-get -q "${apt_private[@]}" update
version=$(apt-cache "${apt_private[@]}" showsrc kubernetes | sed -n 's/^Version: //p' | head -n 1)
case "$version" in
  *really$KUBE_VERSION-*) ;;
  *) die "Debian's kubernetes source is '$version', not Kubernetes $KUBE_VERSION: update this script" ;;
esac
timed "fetching and unpacking the kubernetes source package $version" \
  logged env -C "$WORK/src" apt-get -q "${apt_private[@]}" source "kubernetes=$version"
TREE=$(find "$WORK/src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*')
[ -d "$TREE/vendor" ] || die "no vendored source tree in $WORK/src"

say "replacing the vendored modern-go/reflect2 1.0.1 with Debian's 1.0.2 (keeping its LICENSE)"
vendored=$TREE/vendor/github.com/modern-go/reflect2
[ -d "$REFLECT2_DEBIAN" ] || die "$REFLECT2_DEBIAN is missing (golang-github-modern-go-reflect2-dev)"
find "$vendored" -mindepth 1 -maxdepth 1 ! -name LICENSE -exec rm -rf {} +
cp -r "$REFLECT2_DEBIAN"/. "$vendored"/
rm -rf "$vendored/tests" "$vendored"/*_test.go

# The build system itself runs Go in GOPATH mode (hack/lib/init.sh); nothing is fetched.
export PATH=$GO_BIN:$PATH GOPROXY=off GOFLAGS= GO111MODULE=off
export GOCACHE=$WORK/go-cache HOME=$WORK/home
mkdir -p "$HOME"
cat >"$WORK/version" <<EOF
KUBE_GIT_COMMIT=''
KUBE_GIT_TREE_STATE='archive'
KUBE_GIT_VERSION='v$KUBE_VERSION'
KUBE_GIT_MAJOR='${KUBE_VERSION%%.*}'
KUBE_GIT_MINOR='$(echo "$KUBE_VERSION" | cut -d. -f2)'
EOF
export KUBE_GIT_VERSION_FILE=$WORK/version
# The tarball lacks the generated OpenAPI definitions; the other generated files are in it.
timed "generating the OpenAPI definitions (make gen_openapi)" \
  logged make -C "$TREE" gen_openapi
timed "compiling kube-apiserver and kube-controller-manager with $(go version | cut -d' ' -f3)" \
  logged env -C "$TREE" hack/make-rules/build.sh cmd/kube-apiserver cmd/kube-controller-manager

mkdir -p "$BIN"
install -m 0755 "$TREE/_output/local/bin/linux/amd64/kube-apiserver" \
  "$TREE/_output/local/bin/linux/amd64/kube-controller-manager" "$BIN/"
ln -sf "$(command -v etcd)" "$BIN/etcd"
"$BIN/kube-apiserver" --version >&2
echo "kubernetes source $version, built $(date -u +%FT%TZ) by $0" >"$MARKER"
rm -rf "$WORK"
say "done in $((SECONDS - total_started)) s: $BIN"
echo "$BIN"
