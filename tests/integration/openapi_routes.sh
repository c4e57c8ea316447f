#!/usr/bin/env bash
# The OpenAPI documents of docs/api/ against the code, without a build or a network:
#   1. every route {"METHOD", "/path", ...} of a C route table is documented (path and
#      method) in the role's YAML, and every documented path and method is served;
#   2. every role kind of src/roles/kinds.c has its document;
#   3. the Cause enum of docs/api/common.yaml is exactly the cause names of
#      include/mcim/cause.h;
#   4. each YAML parses, every `cause` enum of a problem response names causes of cause.h
#      whose HTTP status is the response's status, every $ref resolves, and each document
#      is valid OpenAPI 3.0: it validates against the OpenAPI Initiative's JSON Schema of
#      OAS 3.0 (tests/data/openapi/, see its README) with python3-jsonschema.
# Debian's python3 with python3-yaml and python3-jsonschema (scripts/deps.sh installs them)
# runs 4 (MCIM_PYTHON overrides /usr/bin/python3); without them the test fails.
# Path parameters are compared by position, not by name ({id} = {attach_id}).
# Usage: tests/integration/openapi_routes.sh [REPO_ROOT]
set -eu

ROOT="${1:-$(cd "$(dirname "$0")/../.." && pwd)}"
API="$ROOT/docs/api"
CAUSE_H="$ROOT/include/mcim/cause.h"
OAS_SCHEMA="$ROOT/tests/data/openapi/oas-3.0-schema.json"
PY="${MCIM_PYTHON:-/usr/bin/python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcim-openapi.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }

# Routes of C files: "METHOD /path" lines (a table entry may span lines).
routes_of() {
  local f
  for f in "$@"; do
    [ -f "$f" ] || continue
    tr '\n' ' ' <"$f" |
      grep -Eo '\{[[:space:]]*"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)"[[:space:]]*,[[:space:]]*"/[^"]*"' |
      sed -E 's/^\{[[:space:]]*"([A-Z]+)"[[:space:]]*,[[:space:]]*"([^"]*)"$/\1 \2/' || true
  done
}

# Documented "METHOD /path" pairs of a YAML: keys at indent 2 under `paths:`, methods at 4.
yaml_ops() {
  awk -v sq="'" '
    /^paths:/ { inp = 1; next }
    inp && /^[^ #]/ { inp = 0 }
    !inp { next }
    /^  [^ #]/ {
      p = $0; sub(/^  /, "", p); sub(/:[[:space:]]*$/, "", p); gsub("^[\"" sq "]|[\"" sq "]$", "", p)
      path = p; next
    }
    /^    (get|post|put|patch|delete|head|options):/ {
      m = $0; sub(/^    /, "", m); sub(/:.*/, "", m)
      print toupper(m) " " path
    }' "$1"
}

norm() { sed -E 's/\{[^}]*\}/{}/g' | sort -u; }

# check_doc YAML FILES...: routes of FILES against YAML, both ways.
check_doc() {
  local yaml="$1" name
  shift
  name="$(basename "$yaml")"
  routes_of "$@" | norm >"$WORK/code"
  if [ ! -s "$WORK/code" ]; then
    bad "$name: no route found in $*"
    return
  fi
  if [ ! -f "$yaml" ]; then
    bad "$name: missing (routes in ${*#"$ROOT"/})"
    return
  fi
  yaml_ops "$yaml" | norm >"$WORK/doc"
  local m p
  while read -r m p; do
    if grep -qxF "$m $p" "$WORK/doc"; then ok "$name documents $m $p"
    else bad "$name does not document $m $p (served by the code)"; fi
  done <"$WORK/code"
  while read -r m p; do
    grep -qxF "$m $p" "$WORK/code" || bad "$name documents $m $p, which the code does not serve"
  done <"$WORK/doc"
}

RUNTIME="$ROOT/src/roles/runtime.c"
shopt -s nullglob
check_doc "$API/ro.yaml" "$RUNTIME" "$ROOT"/src/roles/ro/*.c
check_doc "$API/vno.yaml" "$RUNTIME" "$ROOT"/src/roles/vno/*.c "$ROOT/src/roles/access.c"
check_doc "$API/sho.yaml" "$RUNTIME" "$ROOT"/src/roles/sho/*.c
check_doc "$API/pva.yaml" "$RUNTIME" "$ROOT"/src/roles/pva/*.c
check_doc "$API/m2mes.yaml" "$RUNTIME" "$ROOT"/src/roles/m2mes/*.c
dev_files=("$ROOT"/src/device/*.c)
if [ "${#dev_files[@]}" -gt 0 ] && [ -n "$(routes_of "${dev_files[@]}")" ]; then
  check_doc "$API/m2me-agent.yaml" "${dev_files[@]}"
else
  ok "src/device serves no route table yet: m2me-agent.yaml not checked"
fi

# Route tables nobody maps to a document (a new role folder, a new file elsewhere).
for f in "$ROOT"/src/roles/*.c "$ROOT"/src/roles/*/*.c "$ROOT"/src/device/*.c; do
  case "$f" in
  "$RUNTIME" | "$ROOT"/src/roles/ro/* | "$ROOT"/src/roles/vno/* | "$ROOT/src/roles/access.c" | \
    "$ROOT"/src/roles/sho/* | "$ROOT"/src/roles/pva/* | "$ROOT"/src/roles/m2mes/* | \
    "$ROOT"/src/device/*) continue ;;
  esac
  if [ -n "$(routes_of "$f")" ]; then bad "routes in ${f#"$ROOT"/} belong to no document"; fi
done

# Every role kind has its document.
kinds="$(grep -Eo '&mcim_role_[a-z0-9_]+' "$ROOT/src/roles/kinds.c" | sed 's/&mcim_role_//' | sort -u)"
for k in $kinds; do
  if [ -f "$API/$k.yaml" ]; then ok "role kind $k has docs/api/$k.yaml"
  else bad "role kind $k has no docs/api/$k.yaml"; fi
done

# The cause enum of common.yaml = the cause names of cause.h.
sed -nE 's/^[[:space:]]*X\(([A-Z0-9_]+),.*/\1/p' "$CAUSE_H" | sort -u >"$WORK/causes"
if [ ! -s "$WORK/causes" ]; then
  bad "no cause name read from include/mcim/cause.h"
elif [ ! -f "$API/common.yaml" ]; then
  bad "docs/api/common.yaml is missing"
else
  awk '
    /^    Cause:/ { c = 1; next }
    c && /^    [^ ]/ { c = 0 }
    c && /^      enum:/ { e = 1; next }
    c && e && /^        - / { v = $0; sub(/^        - /, "", v); print v; next }
    c && e && !/^        / { e = 0 }' "$API/common.yaml" | sort -u >"$WORK/enum"
  missing=0
  while read -r c; do
    if ! grep -qxF "$c" "$WORK/enum"; then bad "cause $c of cause.h is not in common.yaml's Cause enum"; missing=1; fi
  done <"$WORK/causes"
  [ "$missing" -eq 0 ] && ok "common.yaml's Cause enum lists all $(wc -l <"$WORK/causes") causes of cause.h"
  while read -r c; do
    grep -qxF "$c" "$WORK/causes" || bad "common.yaml's Cause enum has $c, which cause.h does not define"
  done <"$WORK/enum"
fi

# Parse, problem causes per status, $refs, validity against the OAS 3.0 schema.
if ! "$PY" -c 'import yaml, jsonschema' 2>"$WORK/pyerr"; then
  bad "$PY with the modules yaml and jsonschema is needed (scripts/deps.sh installs python3-yaml and python3-jsonschema): $(tail -n 1 "$WORK/pyerr")"
elif [ ! -s "$OAS_SCHEMA" ]; then
  bad "the OAS 3.0 schema ${OAS_SCHEMA#"$ROOT"/} is missing"
else
  st=0
  "$PY" - "$API" "$CAUSE_H" "$OAS_SCHEMA" <<'EOF' >"$WORK/py" 2>&1 || st=$?
import glob, json, os, re, sys
import jsonschema
import yaml

api, cause_h, oas_schema = sys.argv[1], sys.argv[2], sys.argv[3]
status = {n: int(h) for n, c, h in re.findall(r'X\((\w+),\s*(\d+),\s*(\d+),', open(cause_h).read())}
docs = {}
for path in sorted(glob.glob(os.path.join(api, "*.yaml"))):
    name = os.path.basename(path)
    try:
        docs[name] = yaml.safe_load(open(path))
        print(f"ok   {name} parses as YAML")
    except yaml.YAMLError as e:
        print(f"FAIL {name} does not parse: {str(e).splitlines()[0]}")

def walk(node, fn, where=()):
    fn(node, where)
    if isinstance(node, dict):
        for k, v in node.items():
            walk(v, fn, where + (str(k),))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk(v, fn, where + (str(i),))

def pointer(doc, frag):
    node = doc
    for part in frag.lstrip("/").split("/") if frag else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True

for name, doc in docs.items():
    bad = []
    def check(node, where):
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            f, _, frag = node["$ref"].partition("#")
            target = docs.get(os.path.basename(f)) if f else doc
            if target is None or not pointer(target, frag):
                bad.append(f"$ref {node['$ref']} at {'/'.join(where)} does not resolve")
        # a problem response: responses/<status>/content/application~1problem+json/.../cause/enum
        if (isinstance(node, dict) and isinstance(node.get("enum"), list) and where
                and where[-1] == "cause" and "responses" in where):
            st = where[where.index("responses") + 1]
            for c in node["enum"]:
                if c not in status:
                    bad.append(f"cause {c} at {'/'.join(where)} is not in cause.h")
                elif st.isdigit() and status[c] != int(st):
                    bad.append(f"cause {c} (HTTP {status[c]}) listed under response {st} "
                               f"at {'/'.join(where[:where.index('responses') + 2])}")
    walk(doc, check)
    if bad:
        for b in bad:
            print(f"FAIL {name}: {b}")
    else:
        print(f"ok   {name}: $refs resolve, problem causes match their HTTP status")

# Valid OpenAPI 3.0: the document declares 3.0.x and validates against the OAS 3.0 schema.
schema = json.load(open(oas_schema))
validator_class = jsonschema.validators.validator_for(schema)
validator_class.check_schema(schema)
validator = validator_class(schema)
for name, doc in docs.items():
    version = doc.get("openapi") if isinstance(doc, dict) else None
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if not (isinstance(version, str) and re.match(r"^3\.0\.\d+$", version)):
        print(f"FAIL {name}: openapi is {version!r}, not 3.0.x")
    elif errors:
        for e in errors[:5]:
            print(f"FAIL {name} is not valid OpenAPI 3.0 at /{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}")
    else:
        print(f"ok   {name} is valid OpenAPI {version} (OAS 3.0 schema)")
print("done")
EOF
  while IFS= read -r line; do
    case "$line" in
    "ok   "*) ok "${line#ok   }" ;;
    "FAIL "*) bad "${line#FAIL }" ;;
    done) ;;
    *) echo "     $line" ;;
    esac
  done <"$WORK/py"
  [ "$st" -eq 0 ] && grep -qx done "$WORK/py" || bad "the python checks did not finish (exit $st, see the lines above)"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
