#!/usr/bin/env bash
# molt's main job on a built-in example: publish three releases of examples/demo-app to a local
# file:// repository, then keep an install up to date through them — a full first install, a
# patch, another patch — and roll back once. Everything lands in target/demo/ (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --quiet --bin molt
molt="$PWD/target/debug/molt"
work="${1:-target/demo}"
rm -rf "$work" && mkdir -p "$work" && work="$(cd "$work" && pwd)"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "keygen: a release signing key"
"$molt" keygen --out-dir "$work/keys"

for v in 1.0.0 1.1.0 1.2.0; do
    step "publish $v (full package + patches from earlier releases, re-signed manifest)"
    "$molt" publish --repo "$work/repo" --key "$work/keys/release.key.pem" --product demo-app \
        --version "$v" --tree examples/demo-app/"$v" --notes "demo release $v"
done

cat > "$work/molt.toml" <<TOML
product = "demo-app"
install_dir = "install"

[source]
url = "file://$work/repo"
keys = ["keys/release.pub.pem"]

[strategy]
plugin = "builtin:default"

[[validators]]
plugin = "builtin:require-files"
[validators.config]
paths = ["bin/demo-app", "VERSION"]

[apply]
preserve = ["data/"]
TOML

step "apply --version 1.0.0: first install into an empty directory (full)"
"$molt" apply --config "$work/molt.toml" --version 1.0.0
mkdir -p "$work/install/data" && echo "user data survives updates" > "$work/install/data/notes.txt"
step "check: what would happen next"
"$molt" check --config "$work/molt.toml" --version 1.1.0
step "apply --version 1.1.0 (patch)"
"$molt" apply --config "$work/molt.toml" --version 1.1.0
step "apply: to the newest release (patch from 1.1.0)"
"$molt" apply --config "$work/molt.toml"
"$work/install/bin/demo-app"
step "rollback: back to 1.1.0 from the kept backup"
"$molt" rollback --config "$work/molt.toml"
"$work/install/bin/demo-app"
step "status and verify"
"$molt" status --config "$work/molt.toml"
"$molt" verify --config "$work/molt.toml"
cat "$work/install/data/notes.txt"
echo
echo "Demo complete: repository in $work/repo, install in $work/install."
