#!/usr/bin/env bash
# Checks the minimum supported Rust version without installing a second
# toolchain. The workspace declares one `rust-version` (root Cargo.toml,
# [workspace.package]); this script fails when
#   - a workspace member does not inherit it (clippy's `incompatible_msrv`
#     lint checks our own std and core::arch use against the member's
#     rust-version, so a member without one goes unchecked), or
#   - a package in a committed lock file (Cargo.lock, fuzz/Cargo.lock)
#     declares a newer rust-version than the workspace does, or
#   - a lock file is out of date (cargo metadata --locked refuses it).
# Language features newer than rust-version are not caught by either check;
# only a build with that exact toolchain would catch them.
# Needs cargo and python3; cargo may download crate manifests for every
# platform the locks cover.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - <<'EOF'
import json
import re
import subprocess
import sys


def version_key(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def declared_rust_version(manifest):
    text = open(manifest, encoding="utf-8").read()
    try:
        import tomllib
    except ImportError:  # python < 3.11: the key is on one line
        section = re.search(r"^\[workspace\.package\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
        found = section and re.search(r'^rust-version\s*=\s*"([^"]+)"', section.group(1), re.M)
        return found.group(1) if found else None
    return tomllib.loads(text).get("workspace", {}).get("package", {}).get("rust-version")


def metadata(manifest, lock):
    run = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--manifest-path", manifest],
        stdout=subprocess.PIPE,
    )
    if run.returncode != 0:
        sys.exit(f"check-msrv: cargo metadata --locked failed for {manifest} "
                 f"(is {lock} committed and up to date?)")
    return json.loads(run.stdout)


declared = declared_rust_version("Cargo.toml")
if declared is None:
    sys.exit("check-msrv: Cargo.toml has no rust-version in [workspace.package]")
limit = version_key(declared)
print(f"workspace rust-version: {declared}")

failures = []
for manifest, lock in (("Cargo.toml", "Cargo.lock"), ("fuzz/Cargo.toml", "fuzz/Cargo.lock")):
    meta = metadata(manifest, lock)
    members = set(meta["workspace_members"])
    highest, top, setters = (), "none", []
    for package in meta["packages"]:
        name = f'{package["name"]} {package["version"]}'
        wanted = package.get("rust_version")
        if package["id"] in members and manifest == "Cargo.toml":
            if wanted is None or version_key(wanted) != limit:
                failures.append(f"{name}: member declares rust-version {wanted}, "
                                "not the workspace's (add `rust-version.workspace = true`)")
            continue
        if package["id"] in members or package["source"] is None:
            continue  # our own crates: checked above and by clippy
        if wanted is None:
            continue
        key = version_key(wanted)
        if key > limit:
            failures.append(f"{name} (in {lock}) needs Rust {wanted}, above {declared}")
        if key > highest:
            highest, top, setters = key, wanted, [name]
        elif key == highest:
            setters.append(name)
    print(f"{lock}: highest dependency rust-version {top} ({', '.join(setters)})")

if failures:
    print("check-msrv: FAILED", file=sys.stderr)
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    sys.exit(1)
print("check-msrv: ok")
EOF
