# Debian packages: container runtime, namespaces, image bootstrap, headless browser, Java for ScienceWorld (only when root and missing).
DEBIAN_PKGS=(docker.io bubblewrap libseccomp2 linux-libc-dev runsc debootstrap chromium chromium-driver default-jre-headless)
missing=()
for p in "${DEBIAN_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "not root: cannot install ${missing[*]}; the sandboxes that need them will be skipped with a reason"
  fi
fi
