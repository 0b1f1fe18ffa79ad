# Sourced by tests/run and tests/demo: checks for root and installs the system tools the lab
# needs (network namespaces, iptables, packet captures) when they are missing.

if [[ $(id -u) -ne 0 ]]; then
    echo "$0: the lab creates network namespaces, veth pairs and iptables rules, so it needs root." >&2
    echo "    run it again with: sudo $0" >&2
    exit 1
fi

# The command that must exist, and the Debian package that brings it.
declare -A PACKAGES=([ip]=iproute2 [iptables]=iptables [iptables-restore]=iptables [tcpdump]=tcpdump [nsenter]=util-linux [python3]=python3)
missing=()
for tool in "${!PACKAGES[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool || -x /sbin/$tool ]] || missing+=("${PACKAGES[$tool]}")
done
if ((${#missing[@]})); then
    # Each package once, even when several of its commands are missing.
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "$0: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
