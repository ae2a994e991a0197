#!/usr/bin/env bash
# Builds lowkey's .deb and .rpm from a clean checkout, then checks both:
#
#   packaging/build.sh            # prints the two package paths, lintian and rpm output
#
# Steps: install cargo-deb and cargo-generate-rpm if missing; build the release binary;
# generate the man page and shell completions (the gen-assets example); gzip the man
# page; `cargo deb --no-build`; `cargo generate-rpm`; lintian (no error, no warning
# allowed); rpm -qpi/-qpl/-K; rpmlint when it is installed (no error allowed).
# The packaging metadata is [package.metadata.deb] and [package.metadata.generate-rpm]
# in Cargo.toml; maintainer scripts and extras live beside this file.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

# Tools. cargo-generate-rpm takes minutes to compile, so it is installed only once.
for tool in deb generate-rpm; do
    if ! command -v "cargo-$tool" >/dev/null 2>&1; then
        step "installing cargo-$tool"
        cargo install --locked "cargo-$tool"
    fi
done
missing=()
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
command -v rpm >/dev/null 2>&1 || missing+=(rpm)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        step "installing ${missing[*]}"
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
    else
        echo "build.sh: needs ${missing[*]} (apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi

# The .deb is version X-1 and lintian wants its changelog to say so.
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
if ! head -n 1 packaging/changelog | grep -q "^lowkey ($version-1) "; then
    echo "build.sh: packaging/changelog must start with an entry for $version-1 (Cargo.toml's version)" >&2
    exit 1
fi

# Reproducible timestamps inside both packages: the last commit's time.
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && git rev-parse --git-dir >/dev/null 2>&1; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || true)
    [ -n "$SOURCE_DATE_EPOCH" ] && export SOURCE_DATE_EPOCH
fi

step "building the release binary"
cargo build --release --locked

step "generating the man page and completions"
rm -rf target/assets
cargo run --release --locked --example gen-assets -- target/assets
for f in lowkey.1 completions/lowkey.bash completions/_lowkey completions/lowkey.fish; do
    [ -s "target/assets/$f" ] || { echo "build.sh: gen-assets did not write target/assets/$f" >&2; exit 1; }
done
# Debian policy (and lintian) want man pages compressed at -9, without name or time stamp.
gzip -9 -n -c target/assets/lowkey.1 > target/assets/lowkey.1.gz

# cargo-deb strips its copy of the binary; cargo-generate-rpm packs the file as it is.
strip --strip-all target/release/lowkey

step "building the .deb"
rm -rf target/debian target/generate-rpm
cargo deb --no-build
deb=$(ls target/debian/lowkey_*.deb)

step "building the .rpm"
cargo generate-rpm
rpm=$(ls target/generate-rpm/lowkey-*.rpm)

status=0
step "lintian $deb"
# Overrides, if any, are installed into the package from packaging/lintian-overrides,
# each with its reason, so lintian reads them from the .deb itself.
if ! lintian --fail-on error,warning --tag-display-limit 0 "$deb"; then
    echo "build.sh: lintian reports errors or warnings" >&2
    status=1
fi
echo "lintian: done"

step "rpm -qpi $rpm"
rpm -qpi "$rpm"
step "rpm -qpl $rpm"
rpm -qpl "$rpm"
step "rpm -qp --scripts --requires $rpm"
rpm -qp --scripts "$rpm"
rpm -qpR "$rpm"
step "rpm -K $rpm"
rpm -K "$rpm" || status=1

if command -v rpmlint >/dev/null 2>&1; then
    step "rpmlint $rpm"
    # packaging/rpmlint.toml says why each filtered report does not apply; warnings
    # are shown, errors fail the build.
    rpmlint_out=$(rpmlint -c packaging/rpmlint.toml "$rpm" 2>&1) || true
    printf '%s\n' "$rpmlint_out"
    if printf '%s\n' "$rpmlint_out" | grep -q ': E: '; then
        echo "build.sh: rpmlint reports errors" >&2
        status=1
    fi
fi

step "packages"
echo "$deb"
echo "$rpm"
exit $status
