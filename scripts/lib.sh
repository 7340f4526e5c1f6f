# Shared helpers of the install scripts; source it after setting SCRIPT_NAME.

# Prints "SCRIPT_NAME: message" on stderr and exits 1.
fail() { echo "${SCRIPT_NAME:-script}: $*" >&2; exit 1; }

# Runs a command silently; on failure prints its output and aborts.
quiet() {
    local log
    log="$(mktemp)"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        fail "command failed: $*"
    fi
    rm -f "$log"
}
