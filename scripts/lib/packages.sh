# Sourced by scripts/test and scripts/flotilla-up. `need` collects the
# Debian packages that are missing; `install_needed` installs them when it
# can (as root, or with password-less sudo), else prints the exact command
# and stops.

needed=()

# need PACKAGE TEST...: PACKAGE is needed unless the test (a shell
# command) succeeds.
need() {
    local package="$1"
    shift
    if ! "$@" >/dev/null 2>&1; then
        needed+=("$package")
    fi
}

# Installs what `need` collected, or says how and exits 1.
install_needed() {
    [ ${#needed[@]} -gt 0 ] || return 0
    local apt=()
    if [ "$(id -u)" = 0 ]; then
        apt=(apt-get)
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        apt=(sudo apt-get)
    else
        echo "missing Debian packages: ${needed[*]}" >&2
        echo "install them with:" >&2
        echo "  sudo apt-get install -y ${needed[*]}" >&2
        exit 1
    fi
    echo "installing Debian packages: ${needed[*]}" >&2
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq "${needed[@]}" >/dev/null
    needed=()
}

# Starts the Docker engine when it is installed but not running (as root),
# else says why the tests cannot run.
ensure_docker() {
    docker info >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null 2>&1; then
        echo "the Docker engine is not running; starting dockerd" >&2
        (dockerd >/tmp/dockerd.log 2>&1 &)
        for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
    fi
    echo "the Docker engine is not reachable (docker info fails): start it (systemctl start docker)" >&2
    exit 1
}
