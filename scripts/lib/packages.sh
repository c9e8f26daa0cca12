# Sourced by the scripts that need system packages: `need COMMAND PACKAGE` records a Debian
# package to install when COMMAND is missing; `install_needed` installs them all at once (as
# root, as CI and these machines run; else through sudo). Both idempotent.
needed=()
need() { command -v "$1" >/dev/null 2>&1 || needed+=("$2"); }
install_needed() {
  [ ${#needed[@]} -gt 0 ] || return 0
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${needed[@]}"
  needed=()
}
