# Sourced by scripts/serve and scripts/test: make sure .venv exists and is up to date.
# Works on a fresh Debian 12 with Python 3.11; as root it installs the Debian packages that
# a virtual environment needs there (python3-venv).

find_python() {
  local candidate
  for candidate in ${PYTHON:-} python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "emm: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "emm: please install these Debian packages (as root): $*" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${EMM_APT_UPDATED:-}" ]; then
    apt-get update -qq
    EMM_APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_venv EXTRAS: create .venv if needed and install the project (with EXTRAS, e.g.
# "[test]") whenever pyproject.toml changed since the last install.
ensure_venv() {
  local extras=${1:-} python stamp
  python=$(find_python)
  if [ ! -x .venv/bin/python ]; then
    if ! "$python" -m venv .venv >/dev/null 2>&1; then
      rm -rf .venv
      local version
      version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      apt_install "python${version}-venv" || apt_install python3-venv
      "$python" -m venv .venv
    fi
  fi
  stamp=".venv/.installed${extras}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".${extras}"
    touch "$stamp"
  fi
}
