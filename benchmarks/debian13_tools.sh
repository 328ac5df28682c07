#!/bin/sh
# Fetch Debian 13's builds of docker-registry and skopeo (Go 1.24: SHA-256 with the CPU's SHA
# instructions) next to Debian 12's (Go 1.19: without), for benchmarks/image.py:
#
#   sh benchmarks/debian13_tools.sh [DIR]      # default DIR: .bench-tools/debian13
#   python benchmarks/image.py --case modelcar --registry-binary DIR/usr/bin/docker-registry \
#       --skopeo DIR/skopeo
#
# Nothing is installed: apt runs with a throwaway configuration (its own sources list, lists,
# cache and an empty dpkg status), checks the archive's signature with the system's Debian
# keyring, and the packages are only unpacked into DIR. docker-registry needs libc >= 2.34 and
# runs as it is; skopeo needs libc 2.38, so DIR/skopeo runs it with Debian 13's loader and libc
# (and the gpgme libraries it links) from DIR, falling back to the system's other libraries.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/.bench-tools/debian13}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
apt=$dir/apt
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
     "http://deb.debian.org/debian trixie main" > "$apt/sources.list"
: > "$apt/status"
set -- -q -o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache" \
    -o Dir::State::status="$apt/status" -o Debug::NoLocking=1 \
    -o APT::Sandbox::User=root
apt-get "$@" update >/dev/null
cd "$apt/debs"
apt-get "$@" download docker-registry skopeo libc6 libgpgme11t64 libassuan9 libgpg-error0 \
    >/dev/null
for deb in ./*.deb; do
    dpkg-deb -x "$deb" "$dir"
done
libs=$dir/usr/lib/x86_64-linux-gnu
cat > "$dir/skopeo" <<EOF
#!/bin/sh
exec $libs/ld-linux-x86-64.so.2 \\
    --library-path $libs:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu \\
    $dir/usr/bin/skopeo "\$@"
EOF
chmod +x "$dir/skopeo"
"$dir/usr/bin/docker-registry" --version
"$dir/skopeo" --version
echo "--registry-binary $dir/usr/bin/docker-registry --skopeo $dir/skopeo"
