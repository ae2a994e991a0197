#!/usr/bin/env bash
# Builds lowkey's .deb and .rpm from a clean checkout, then checks both:
#
#   packaging/build.sh            # prints the two package paths, lintian and rpm output
#
# Steps: install cargo-deb if missing, and rpm, lintian and rpmlint; build the release
# binary; generate the man page and shell completions (the gen-assets example); gzip
# the man page for the .deb; `cargo deb --no-build`; rpmbuild -bb packaging/rpm/lowkey.spec
# with a %changelog made from packaging/changelog; lintian and rpmlint (no error, no
# warning allowed); rpm -qpi/-qpl/-K.
# The .deb's metadata is [package.metadata.deb] in Cargo.toml; the .rpm's is the spec.
# Both take their long description from packaging/description and their changelog from
# packaging/changelog; maintainer scripts and extras live beside this file.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

# Tools. cargo-deb takes minutes to compile, so it is installed only once.
if ! command -v cargo-deb >/dev/null 2>&1; then
    step "installing cargo-deb"
    cargo install --locked cargo-deb
fi
missing=()
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
# Debian's rpm package has rpmbuild.
command -v rpmbuild >/dev/null 2>&1 || missing+=(rpm)
command -v rpmlint >/dev/null 2>&1 || missing+=(rpmlint)
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

step "building the .deb"
rm -rf target/debian target/rpmbuild
cargo deb --no-build
deb=$(ls target/debian/lowkey_*.deb)

step "building the .rpm"
# The spec ends with `%changelog`; each Debian changelog entry becomes an rpm one:
#   * Sat Nov 28 2026 NAME <EMAIL> - VERSION-RELEASE
#   - the entry's items
mkdir -p target/rpmbuild/SPECS
spec=target/rpmbuild/SPECS/lowkey.spec
cp packaging/rpm/lowkey.spec "$spec"
entry_version=
while IFS= read -r line; do
    case $line in
        lowkey\ \(*)
            entry_version=${line#lowkey (}
            entry_version=${entry_version%%)*}
            items=() ;;
        "  * "*)
            items+=("- ${line#  \* }") ;;
        "    "*)
            items+=("  ${line#    }") ;;
        " -- "*)
            who=${line# -- }
            when=$(LC_ALL=C date -u -d "${who#*>  }" '+%a %b %d %Y')
            printf '* %s %s - %s\n' "$when" "${who%%>*}>" "$entry_version" >> "$spec"
            printf '%s\n' "${items[@]}" >> "$spec"
            echo >> "$spec" ;;
    esac
done < packaging/changelog
rpmbuild -bb --quiet \
    --define "_topdir $PWD/target/rpmbuild" \
    --define "srcdir $PWD" \
    --define "pkgversion $version" \
    --define "_buildhost lowkey.invalid" \
    --define "use_source_date_epoch_as_buildtime 1" \
    --define "clamp_mtime_to_source_date_epoch 1" \
    "$spec"
rpm=$(ls target/rpmbuild/RPMS/*/lowkey-*.rpm)

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
step "rpm -qp --scripts --requires --changelog $rpm"
rpm -qp --scripts "$rpm"
rpm -qpR "$rpm"
rpm -qp --changelog "$rpm"
step "rpm -K $rpm"
rpm -K "$rpm" || status=1

step "rpmlint $rpm"
# packaging/rpmlint.toml says why each filtered report does not apply; what is left
# fails the build.
rpmlint_out=$(rpmlint -c packaging/rpmlint.toml "$rpm" 2>&1) || true
printf '%s\n' "$rpmlint_out"
if printf '%s\n' "$rpmlint_out" | grep -q ': [EW]: '; then
    echo "build.sh: rpmlint reports errors or warnings" >&2
    status=1
fi

step "packages"
echo "$deb"
echo "$rpm"
exit $status
