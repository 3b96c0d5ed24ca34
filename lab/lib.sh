# shellcheck shell=bash
# lab/lib.sh: what the labs share. Sourced by lab/dr, lab/nat, lab/fullnat and
# lab/operate.
#
# The rules every lab keeps, enforced here:
# - Every namespace and interface this run creates is named `xlb-<pid>-…` (<pid> is the lab's
#   own PID, so two runs never collide), and both ends of every veth are created directly
#   inside namespaces this run created: nothing appears in the caller's namespace.
# - The EXIT trap (also reached on INT, TERM and any failed command, `set -e`) stops only the
#   processes this run started, by PID, and deletes only the namespaces this run created
#   (tracked in LAB_NS), newest first, then the scratch directory. It works from any point,
#   including a failure halfway through building the topology.
# - Every wait is bounded in time, every load in requests (--requests, each curl and each UDP
#   request time out after 2 s).
# - Traffic stays inside the run's namespaces.
#
# A lab calls, in order: lab_init "$@"; lab_ns, lab_veth, lab_bridge, lab_bridge_port (or
# lab_dr_topology, lab_two_subnets; for IPv6 lab_dr6_topology, lab_two_subnets6) to build
# its topology, with lab_http_server and
# lab_udp_server on the real servers; lab_find_xlb, then writes its config and calls
# lab_start_xlb; lab_traffic (lab/operate: its own steps); and lab_finish.

LAB_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_REPO=$(cd "$LAB_SRC/.." && pwd)
LAB_PREFIX="xlb-$$"
LAB_REQUESTS=100
LAB_TIMEOUT=2       # seconds each client request may take
LAB_READY_WAIT=10   # seconds xlb may take to bind its sockets and announce the VIPs
LAB_NS=()           # namespaces this run created, in creation order
LAB_PIDS=()         # processes this run started (each a direct child of this shell)
LAB_TMP=""          # scratch directory: configs, logs, web roots
LAB_XLB=""          # the xlb binary
LAB_XLB_PID=""
LAB_STEP=0
declare -A LAB_BG   # LOG -> PID of the process lab_bg started with that log name
LAB_FAILURES=()     # what went wrong after the topology was up (the lab goes on to report)
LAB_RESULTS=()      # the parts of the final PASS line
declare -A LAB_ANSWERS  # "KIND SERVER" -> how many requests of KIND SERVER answered
declare -A LAB_PORTS    # "KIND SERVER" -> from how many distinct client ports
LAB_VERDICT=""      # the last line, printed after cleanup: "PASS (...)" or "FAIL (...)"
LAB_ERROR=""        # the command that failed, when `set -e` ends the lab
LAB_XLB_ARGS=()     # more `xlb run` arguments (lab_start_xlb)
LAB_HTTP_PROTOCOL="" # the real servers' HTTP version (HTTP/1.1 keeps connections open)
LAB_METRICS=127.0.0.1:9100 # where lab_metrics scrapes xlb (inside the lb's namespace)

lab_usage() {
    cat <<EOF
usage: lab/$LAB_NAME [--requests N]${LAB_EXTRA_USAGE:+ $LAB_EXTRA_USAGE}

${LAB_ABOUT-}

  --requests N   ${LAB_REQUESTS_ABOUT:-HTTP requests and UDP request/responses each} (default $LAB_REQUESTS)
${LAB_EXTRA_ABOUT-}
Environment: XLB=path/to/xlb (default: target/release/xlb, built with cargo if needed).
Needs root, ip, ethtool, curl and python3. Prints the prefix of everything it creates,
the steps, xlb's ipvsadm-style stats, and a last line 'lab $LAB_NAME: PASS (...)' or
'lab $LAB_NAME: FAIL (...)'; exits 0 only on PASS.
EOF
}

# Prints a numbered step.
lab_step() {
    LAB_STEP=$((LAB_STEP + 1))
    printf '==> [%d] %s\n' "$LAB_STEP" "$*"
}

# Prints a detail of the current step.
lab_info() {
    printf '    %s\n' "$*"
}

# Gives up: says why, and exits 1 (the EXIT trap cleans up, then prints the FAIL line).
lab_fail() {
    printf '    FAILED: %s\n' "$*"
    LAB_VERDICT="FAIL ($*)"
    exit 1
}

# Records a failure of the traffic or the stats, and lets the lab go on to report the rest.
lab_failure() {
    LAB_FAILURES+=("$*")
    printf '    FAILED: %s\n' "$*"
}

lab_init() {
    while (($#)); do
        case "$1" in
            --requests)
                [[ ${2-} =~ ^[1-9][0-9]{0,5}$ ]] || {
                    echo "lab $LAB_NAME: --requests needs a positive integer" >&2
                    exit 2
                }
                LAB_REQUESTS=$2
                shift 2
                ;;
            -h | --help)
                lab_usage
                exit 0
                ;;
            *)
                # A lab's own options: it defines lab_arg ARG VALUE, which sets LAB_SHIFT.
                if declare -F lab_arg >/dev/null && lab_arg "$1" "${2-}"; then
                    shift "$LAB_SHIFT"
                    continue
                fi
                echo "lab $LAB_NAME: unknown argument '$1'" >&2
                lab_usage >&2
                exit 2
                ;;
        esac
    done
    [ "$(id -u)" -eq 0 ] || {
        echo "lab $LAB_NAME: needs root (network namespaces, XDP)" >&2
        exit 2
    }
    local tool
    for tool in ip ethtool curl python3 ss ps; do
        command -v "$tool" >/dev/null || {
            echo "lab $LAB_NAME: needs $tool (bash scripts/setup installs it)" >&2
            exit 2
        }
    done
    trap lab_cleanup EXIT
    # errtrace: a command failing inside a function (which ends the lab, set -e) is named too.
    set -E
    trap 'LAB_ERROR="line $LINENO: $BASH_COMMAND"' ERR
    trap 'lab_interrupted INT' INT
    trap 'lab_interrupted TERM' TERM
    LAB_TMP=$(mktemp -d "/tmp/$LAB_PREFIX-$LAB_NAME.XXXXXX")
    # lab/udp.py's and lab/dnsd.py's clients never reuse a source port an earlier round of
    # this lab used: its flow may still be in xlb, to the server it picked then.
    export LAB_UDP_PORTS="$LAB_TMP/udp-ports"
    echo "lab $LAB_NAME: prefix $LAB_PREFIX (namespaces $LAB_PREFIX-*, scratch $LAB_TMP), $LAB_REQUESTS ${LAB_REQUESTS_NOUN:-requests}"
}

lab_interrupted() {
    LAB_VERDICT="FAIL (interrupted by SIG$1)"
    exit 130
}

# lab_run OUT CMD...: runs CMD in the background, its output (stdout and stderr) to the file
# OUT, and waits for it, returning its status. Bash runs a signal's trap only once the
# foreground command has finished, so long commands (the clients, cargo) run this way:
# `wait` returns at once on INT or TERM, the trap runs, and the cleanup stops CMD by its PID.
# (OUT is an argument, not a redirection of lab_run itself: the trap would inherit that.)
lab_run() {
    local out=$1 pid rc
    shift
    "$@" >"$out" 2>&1 &
    pid=$!
    LAB_PIDS+=("$pid")
    wait "$pid" && rc=0 || rc=$?
    unset 'LAB_PIDS[${#LAB_PIDS[@]}-1]'
    return "$rc"
}

# Whether PID is a live direct child of this shell (so a PID that was reused by someone
# else after our process ended is never signalled).
lab_is_ours() {
    local ppid
    ppid=$(ps -o ppid= -p "$1" 2>/dev/null) || return 1
    [ "${ppid// /}" = "$$" ]
}

# Stops the processes this run started and removes the namespaces it created. Idempotent;
# runs on every exit path.
lab_cleanup() {
    local rc=$? pid ns i pids left
    trap - EXIT INT TERM ERR
    set +e
    if [ -z "$LAB_VERDICT" ]; then
        if ((rc == 0)); then
            LAB_VERDICT="FAIL (ended without a verdict)"
            rc=1
        else
            LAB_VERDICT="FAIL (exit status $rc${LAB_ERROR:+ after $LAB_ERROR})"
        fi
    fi
    if ((rc != 0)) && [ -n "$LAB_TMP" ] && [ -d "$LAB_TMP" ]; then
        lab_show_logs
    fi
    for pid in "${LAB_PIDS[@]}"; do
        lab_is_ours "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for _ in $(seq 30); do
        left=0
        for pid in "${LAB_PIDS[@]}"; do lab_is_ours "$pid" && left=1; done
        ((left)) || break
        sleep 0.1
    done
    for pid in "${LAB_PIDS[@]}"; do
        lab_is_ours "$pid" && kill -KILL "$pid" 2>/dev/null
    done
    for ((i = ${#LAB_NS[@]} - 1; i >= 0; i--)); do
        ns=${LAB_NS[i]}
        # Whatever still runs inside a namespace of ours was started by this run (a client
        # cut short by a signal, say): end it by PID, or the namespace outlives its name.
        pids=$(ip netns pids "$ns" 2>/dev/null)
        # shellcheck disable=SC2086 # one PID per word
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
        ip netns del "$ns" 2>/dev/null || echo "lab $LAB_NAME: could not delete namespace $ns"
    done
    [ -n "$LAB_TMP" ] && rm -rf -- "$LAB_TMP"
    left=$(ip netns list 2>/dev/null | grep -c "^$LAB_PREFIX-")
    if ((left)); then
        echo "lab $LAB_NAME: cleanup: $left namespaces $LAB_PREFIX-* remain"
        if ((rc == 0)); then
            LAB_VERDICT="FAIL (cleanup left $left namespaces)"
            rc=1
        fi
    else
        echo "lab $LAB_NAME: cleanup: removed ${#LAB_NS[@]} namespaces and everything in them"
    fi
    echo "lab $LAB_NAME: $LAB_VERDICT"
    exit "$rc"
}

# On failure: the last lines of every log, before the scratch directory goes.
lab_show_logs() {
    local log
    for log in "$LAB_TMP"/*.log; do
        [ -s "$log" ] || continue
        echo "--- last lines of $(basename "$log")"
        tail -n 15 "$log"
    done
}

# lab_if SUFFIX: the name of an interface of this run, `xlb-<pid>-SUFFIX`. Linux allows 15
# bytes; PIDs have at most 7 digits (pid_max <= 2^22), so suffixes of up to 3 bytes fit.
lab_if() {
    local name="$LAB_PREFIX-$1"
    ((${#name} <= 15)) || lab_fail "interface name $name is longer than 15 bytes"
    printf '%s' "$name"
}

# lab_ns ROLE: creates namespace `xlb-<pid>-ROLE` with `lo` up, and records it for cleanup.
lab_ns() {
    local ns="$LAB_PREFIX-$1"
    ip netns add "$ns" || lab_fail "ip netns add $ns"
    LAB_NS+=("$ns")
    ip -n "$ns" link set lo up
    # Nothing forwards unless a lab says so.
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=0
}

# lab_veth NS_A IF_A NS_B IF_B: a veth with one end in each namespace, created inside NS_A
# with its peer moved straight into NS_B; one queue each end (a native XDP bind on a veth
# with more queues than cores can fail with ENOSPC); checksum and segmentation offload off on
# both ends (a kernel sender's partial checksums would reach AF_XDP unfinished); both up.
lab_veth() {
    local ns_a=$1 if_a=$2 ns_b=$3 if_b=$4
    ip -n "$ns_a" link add "$if_a" numtxqueues 1 numrxqueues 1 type veth \
        peer name "$if_b" numtxqueues 1 numrxqueues 1 netns "$ns_b"
    lab_offloads_off "$ns_a" "$if_a"
    lab_offloads_off "$ns_b" "$if_b"
    ip -n "$ns_a" link set "$if_a" up
    ip -n "$ns_b" link set "$if_b" up
}

lab_offloads_off() {
    ip netns exec "$1" ethtool -K "$2" tx off gso off tso off >/dev/null 2>&1 ||
        lab_fail "ethtool -K $2 tx off gso off tso off in $1"
}

# lab_bridge NS BR: a bridge (a switch) in NS, up, no STP. Where br_netfilter is loaded, the
# bridge would hand IPv4, IPv6 and ARP frames to netfilter, which drops those with a bad
# IPv4 header before they reach any port: off in NS, so the bridge forwards frames as a
# switch does, whatever they carry (lab/malformed sends such frames on purpose).
lab_bridge() {
    local key
    ip -n "$1" link add "$2" type bridge stp_state 0 forward_delay 0
    ip -n "$1" link set "$2" up
    for key in iptables ip6tables arptables; do
        if ip netns exec "$1" test -e "/proc/sys/net/bridge/bridge-nf-call-$key"; then
            lab_sysctl "$1" "net.bridge.bridge-nf-call-$key=0"
        fi
    done
}

# lab_bridge_port SW_NS BR NS IF PORT: a host NS on the bridge: a veth IF in NS whose other
# end PORT is a port of bridge BR in SW_NS.
lab_bridge_port() {
    local sw=$1 br=$2 ns=$3 if=$4 port=$5
    lab_veth "$ns" "$if" "$sw" "$port"
    ip -n "$sw" link set "$port" master "$br"
}

# lab_sysctl NS KEY=VALUE...
lab_sysctl() {
    local ns=$1
    shift
    ip netns exec "$ns" sysctl -qw "$@"
}

# lab_bg NS LOG CMD...: starts CMD inside NS in the background, output to LOG.log in the
# scratch directory; records its PID (`ip netns exec` execs CMD, so it is CMD's PID).
lab_bg() {
    local ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" >"$LAB_TMP/$log.log" 2>&1 &
    LAB_PIDS+=("$!")
    # shellcheck disable=SC2034 # read by lab/operate
    LAB_BG["$log"]=$!
}

# lab_wait SECONDS WHAT CMD...: polls CMD every 0.1 s until it succeeds; fails the lab after
# SECONDS.
lab_wait() {
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds * 10; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    lab_fail "$what: not within $seconds s"
}

# lab_listening NS PROTO PORT: whether something in NS listens on PROTO (tcp/udp) PORT.
lab_listening() {
    local flag=-ltn
    [ "$2" = udp ] && flag=-lun
    [ -n "$(ip netns exec "$1" ss -H "$flag" "sport = :$3")" ]
}

# lab_http_server NS NAME PORT: `python3 -m http.server` on 0.0.0.0:PORT in NS, serving an
# index.html that says NAME; waits (bounded) until it listens.
lab_http_server() {
    local ns=$1 name=$2 port=$3 dir="$LAB_TMP/www-$2"
    mkdir -p "$dir"
    echo "$name" >"$dir/index.html"
    lab_bg "$ns" "http-$name" python3 -m http.server --bind 0.0.0.0 --directory "$dir" \
        ${LAB_HTTP_PROTOCOL:+--protocol "$LAB_HTTP_PROTOCOL"} "$port"
    lab_wait 10 "$name's HTTP server on :$port" lab_listening "$ns" tcp "$port"
    lab_info "$name: HTTP on 0.0.0.0:$port (python3 -m http.server, says '$name')"
}

# lab_udp_server NS NAME PORT: lab/udp.py's server on 0.0.0.0:PORT in NS, answering every
# datagram with NAME from the address it was sent to; waits (bounded) until it listens.
lab_udp_server() {
    local ns=$1 name=$2 port=$3
    lab_bg "$ns" "udp-$name" python3 -u "$LAB_SRC/udp.py" serve --name "$name" --port "$port"
    lab_wait 10 "$name's UDP server on :$port" lab_listening "$ns" udp "$port"
    lab_info "$name: UDP on 0.0.0.0:$port (lab/udp.py, answers '$name')"
}

# lab_http_clients NS URL N OUT: N sequential `curl -s --max-time 2 URL` in NS, each a new
# connection; one line per request in OUT: `ok BODY LOCAL_PORT` or `fail curl-EXIT_CODE`.
lab_http_clients() {
    # shellcheck disable=SC2016 # the loop runs in the namespace's bash
    lab_run "$4" ip netns exec "$1" bash -c '
        for ((i = 0; i < $2; i++)); do
            # The body ("rs1\n") then the local port; unquoted, the newline goes.
            if out=$(curl -s --max-time "$3" -w " %{local_port}" "$1"); then echo ok $out; else echo "fail curl-$?"; fi
        done' lab-http-client "$2" "$3" "$LAB_TIMEOUT"
}

# lab_udp_clients NS ADDR PORT N OUT [SIZE]: N request/responses, each from a fresh socket,
# in NS; one line per request in OUT, as lab_http_clients. With SIZE, each request is SIZE
# bytes (random after its number) and its answer must echo it whole.
lab_udp_clients() {
    lab_run "$5" ip netns exec "$1" python3 "$LAB_SRC/udp.py" ask --addr "$2" --port "$3" \
        --count "$4" --timeout "$LAB_TIMEOUT" ${6:+--size "$6"}
}

# lab_tally KIND OUT N SERVER...: counts the answers in OUT, prints them, and records a
# failure unless all N succeeded and every SERVER answered at least a quarter of them.
# Remembers, per SERVER, how many requests it answered and from how many distinct client
# ports (for lab_stats_conns).
lab_tally() {
    local kind=$1 out=$2 n=$3 ok server count ports shares=()
    shift 3
    ok=$(grep -c '^ok ' "$out" || true)
    lab_info "$kind: $ok/$n answered"
    if ((ok != n)); then
        lab_failure "$kind: $((n - ok)) of $n requests failed ($(lab_counts < <(grep -v '^ok ' "$out" | sed 's/^fail //')))"
    fi
    for server in "$@"; do
        count=$(grep -c "^ok $server " "$out" || true)
        ports=$(awk -v s="$server" '$1 == "ok" && $2 == s { print $3 }' "$out" | sort -u | wc -l)
        LAB_ANSWERS["$kind $server"]=$count
        LAB_PORTS["$kind $server"]=$ports
        shares+=("$server $count")
        lab_info "$kind: $server answered $count (from $ports distinct client ports)"
        if ((count * 4 < n)); then
            lab_failure "$kind: $server answered $count of $n, less than a quarter"
        fi
    done
    count=$(grep '^ok ' "$out" | grep -cvE "^ok ($(lab_join '|' "$@")) [0-9]+$" || true)
    ((count == 0)) || lab_failure "$kind: $count answers from no known server"
    LAB_RESULTS+=("$ok/$n $kind: $(lab_join ', ' "${shares[@]}")")
}

# Counts the lines of stdin: "a x3, b x1" (most frequent first).
lab_counts() {
    sort | uniq -c | sort -rn | awk '{ c = $1; sub(/^ *[0-9]+ /, ""); printf "%s%s x%s", (NR > 1 ? ", " : ""), $0, c }'
}

# lab_join SEPARATOR WORD...: the words joined by SEPARATOR.
lab_join() {
    local sep=$1 out=${2-} word
    shift 2 || shift
    for word in "$@"; do out+="$sep$word"; done
    printf '%s' "$out"
}

# lab_sources NAME EXPECTED [6]: checks that every request NAME's HTTP and UDP servers answered
# came from the address EXPECTED (the client in DR and NAT, a local address in FullNAT); with
# 6, NAME's IPv6 servers (logs http6-NAME, udp6-NAME). Only `GET /` counts: the labs' own
# topology checks ask for /index.html.
lab_sources() {
    local name=$1 want=$2 family=${3-} seen
    seen=$( {
        awk '/"GET \/ HTTP\// { print $1 }' "$LAB_TMP/http$family-$name.log"
        awk '$2 == "->" { sub(/:[0-9]+$/, "", $1); print $1 }' "$LAB_TMP/udp$family-$name.log"
    } | lab_counts)
    name+=${family:+ (IPv$family)}
    lab_info "$name saw requests from: ${seen:-nobody}"
    if [ -n "$seen" ] && [ "$seen" != "$want x${seen##* x}" ]; then
        lab_failure "$name saw requests from other than $want: $seen"
    fi
}

# Finds the xlb binary: $XLB, else target/release/xlb, built (or brought up to date) with
# cargo when cargo is here.
lab_find_xlb() {
    if [ -n "${XLB-}" ]; then
        [ -x "$XLB" ] || lab_fail "XLB=$XLB is not an executable"
        LAB_XLB=$XLB
    else
        LAB_XLB="$LAB_REPO/target/release/xlb"
        if command -v cargo >/dev/null; then
            lab_info "cargo build --release (in $LAB_REPO)"
            lab_run "$LAB_TMP/cargo.log" \
                cargo build --release --manifest-path "$LAB_REPO/Cargo.toml" ||
                lab_fail "cargo build --release (see cargo.log above)"
        fi
        [ -x "$LAB_XLB" ] || lab_fail "no $LAB_XLB: run cargo build --release, or set XLB"
    fi
    lab_info "xlb: $LAB_XLB"
}

# lab_start_xlb NS CONFIG: `xlb run --config CONFIG --cores 1 --ready-file ...` (and
# LAB_XLB_ARGS) inside NS,
# its control socket in the scratch directory (`xlb ctl --socket $LAB_TMP/xlb.sock` talks to
# it; several labs may run at once), stats (stdout) and log (stderr) to the scratch
# directory; waits until xlb says it is ready
# (its sockets are bound and its gratuitous ARP is out), at most LAB_READY_WAIT seconds.
lab_start_xlb() {
    local ns=$1 config=$2 ready="$LAB_TMP/xlb.ready" i rc busy=()
    rm -f "$ready"
    # The labs' veths link no NAPI to an AF_XDP socket, so `--busy-poll auto` (the default)
    # would fall back with a warning, which the labs' "no warnings" checks count: they run in
    # interrupt mode explicitly unless LAB_XLB_ARGS chooses (bench/sidebyside measures both).
    [[ " ${LAB_XLB_ARGS[*]} " == *" --busy-poll"* || " ${LAB_XLB_ARGS[*]} " == *" --no-busy-poll "* ]] ||
        busy=(--no-busy-poll)
    ip netns exec "$ns" "$LAB_XLB" run --config "$config" --cores 1 --ready-file "$ready" \
        --socket "$LAB_TMP/xlb.sock" "${busy[@]}" "${LAB_XLB_ARGS[@]}" >"$LAB_TMP/xlb.stats" 2>"$LAB_TMP/xlb.log" &
    LAB_XLB_PID=$!
    LAB_PIDS+=("$LAB_XLB_PID")
    for ((i = 0; i < LAB_READY_WAIT * 10; i++)); do
        [ -e "$ready" ] && break
        lab_is_ours "$LAB_XLB_PID" || {
            wait "$LAB_XLB_PID" && rc=0 || rc=$?
            lab_fail "xlb run exited with status $rc before it was ready"
        }
        sleep 0.1
    done
    [ -e "$ready" ] || lab_fail "xlb run was not ready within $LAB_READY_WAIT s"
    lab_info "xlb run is up (PID $LAB_XLB_PID, ready after about $((i / 10)).$((i % 10)) s)"
}

# Stops xlb with SIGTERM (bounded wait) and prints its final stats table; records a failure
# unless it exits 0.
lab_stop_xlb() {
    local i rc
    kill -TERM "$LAB_XLB_PID"
    for ((i = 0; i < 100; i++)); do
        lab_is_ours "$LAB_XLB_PID" || break
        sleep 0.1
    done
    if lab_is_ours "$LAB_XLB_PID"; then
        lab_failure "xlb run did not exit within 10 s of SIGTERM"
        return
    fi
    wait "$LAB_XLB_PID" && rc=0 || rc=$?
    ((rc == 0)) || lab_failure "xlb run exited with status $rc after SIGTERM"
    lab_info "xlb run exited with status $rc; its log (last 20 lines):"
    tail -n 20 "$LAB_TMP/xlb.log" | sed 's/^/    | /'
    lab_info "its stats (ipvsadm -L -n --stats):"
    sed 's/^/    | /' "$LAB_TMP/xlb.stats"
}

# lab_stats_conns PROTO VIP:PORT KIND SERVER=ADDR:PORT...: checks xlb's final table: the
# service's line is there, and each backend's Conns is the number of flows its SERVER
# answered (nothing but the lab's clients reaches the VIP). Every request comes from a fresh
# socket, but the kernel picks its port at random, so over many requests a client port comes
# round again while xlb still tracks the flow it began. For UDP that is the same flow, to
# xlb as to IPVS: Conns is the number of distinct client ports. For TCP, a SYN on a tracked
# flow that is closing is a new connection, to xlb as to IPVS (conn_reuse_mode=1:
# rescheduled and counted): Conns is the number of requests the server answered.
lab_stats_conns() {
    local proto=$1 service=$2 kind=$3 pair server backend conns answered ports
    shift 3
    # An IPv6 service is bracketed ([2001:db8::10]:80): its brackets and dots are literal.
    if ! grep -qE "^$proto +$(lab_regex_quote "$service")( |$)" "$LAB_TMP/xlb.stats"; then
        lab_failure "stats: no line for $proto $service"
        return
    fi
    for pair in "$@"; do
        server=${pair%%=*}
        backend=${pair#*=}
        conns=$(awk -v svc="$service" -v proto="$proto" -v backend="$backend" '
            $1 == "TCP" || $1 == "UDP" { inside = ($1 == proto && $2 == svc) }
            inside && $1 == "->" && $2 == backend { print $3; exit }' "$LAB_TMP/xlb.stats")
        answered=${LAB_ANSWERS["$kind $server"]}
        ports=${LAB_PORTS["$kind $server"]}
        local expected=$ports
        [ "$proto" = TCP ] && expected=$answered
        if [ "$conns" = "$expected" ]; then
            if ((answered != ports)); then
                lab_info "stats: $proto $service -> $backend: $conns Conns for $answered requests from $ports distinct client ports ($((answered - ports)) reused a port still tracked)"
            fi
        else
            lab_failure "stats: $proto $service -> $backend: ${conns:-no line} Conns, but $server answered $answered requests from $ports distinct client ports (expected $expected)"
        fi
    done
}

# lab_traffic CLIENT_NS VIP SOURCE WHY HTTP_BACKEND UDP_BACKEND: the second half of every
# lab, once xlb is up: the client's HTTP requests to VIP:80 and UDP request/responses to
# VIP:53, tallied per real server (rs1, rs2); the source address the real servers saw (SOURCE,
# because WHY); then xlb stopped, and its stats table printed and checked against what the
# clients saw. HTTP_BACKEND and UDP_BACKEND are printf patterns of rsN's address:port (%d: N).
lab_traffic() {
    local client=$1 vip=$2 source=$3 why=$4 http=$5 udp=$6 n
    lab_step "client: $LAB_REQUESTS x curl -s --max-time $LAB_TIMEOUT http://$vip/"
    lab_http_clients "$client" "http://$vip/" "$LAB_REQUESTS" "$LAB_TMP/http.out"
    lab_tally http "$LAB_TMP/http.out" "$LAB_REQUESTS" rs1 rs2
    lab_step "client: $LAB_REQUESTS UDP request/responses to $vip:53 (lab/udp.py, one flow each)"
    lab_udp_clients "$client" "$vip" 53 "$LAB_REQUESTS" "$LAB_TMP/udp.out"
    lab_tally udp "$LAB_TMP/udp.out" "$LAB_REQUESTS" rs1 rs2
    lab_step "real servers: requests came from $source ($why)"
    for n in 1 2; do lab_sources "rs$n" "$source"; done
    lab_step "stop xlb (SIGTERM)"
    lab_stop_xlb
    # shellcheck disable=SC2059 # the patterns are the callers' constants
    lab_stats_conns TCP "$vip:80" http "rs1=$(printf "$http" 1)" "rs2=$(printf "$http" 2)"
    # shellcheck disable=SC2059
    lab_stats_conns UDP "$vip:53" udp "rs1=$(printf "$udp" 1)" "rs2=$(printf "$udp" 2)"
}

# lab_dr_topology VIP N: the DR topology (lab/dr, lab/operate). The client (10.1.1.100/24),
# the lb (10.1.1.2/24 on `lb`, no VIP, no forwarding) and N real servers rs1..rsN
# (10.1.1.1N/24) share one bridge in a namespace of its own. The real servers are configured
# the textbook way and nothing else: VIP/32 on `lo`, arp_ignore=1 and arp_announce=2 (all and
# their interface), accept_local left at 0 (checked). Each serves HTTP on :80 and UDP on :53.
# Ends with a topology check without xlb (the client fetches /index.html from each real
# server directly). Sets LAB_SW, LAB_CLIENT, LAB_LB and LAB_LB_IF.
lab_dr_topology() {
    local vip=$1 count=$2 n ns if body roles=(switch client lb)
    LAB_SW=$LAB_PREFIX-switch
    LAB_CLIENT=$LAB_PREFIX-client
    LAB_LB=$LAB_PREFIX-lb
    LAB_LB_IF=$(lab_if lb)
    local br
    br=$(lab_if br)
    for ((n = 1; n <= count; n++)); do roles+=("rs$n"); done
    lab_step "namespaces: $(lab_join ', ' "${roles[@]}")"
    for n in "${roles[@]}"; do lab_ns "$n"; done
    lab_bridge "$LAB_SW" "$br"
    lab_bridge_port "$LAB_SW" "$br" "$LAB_CLIENT" "$(lab_if c)" "$(lab_if pc)"
    lab_bridge_port "$LAB_SW" "$br" "$LAB_LB" "$LAB_LB_IF" "$(lab_if plb)"
    ip -n "$LAB_CLIENT" addr add 10.1.1.100/24 dev "$(lab_if c)"
    ip -n "$LAB_LB" addr add 10.1.1.2/24 dev "$LAB_LB_IF"
    lab_info "bridge $br in $LAB_SW; client 10.1.1.100, lb 10.1.1.2 ($LAB_LB_IF, no VIP, ip_forward=0)"

    lab_step "real servers: VIP $vip on lo, arp_ignore=1, arp_announce=2, accept_local=0"
    for ((n = 1; n <= count; n++)); do
        ns=$LAB_PREFIX-rs$n
        if=$(lab_if r$n)
        lab_bridge_port "$LAB_SW" "$br" "$ns" "$if" "$(lab_if pr$n)"
        ip -n "$ns" addr add "10.1.1.1$n/24" dev "$if"
        ip -n "$ns" addr add "$vip/32" dev lo
        lab_sysctl "$ns" net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
            "net.ipv4.conf.$if.arp_ignore=1" "net.ipv4.conf.$if.arp_announce=2"
        [ "$(ip netns exec "$ns" sysctl -n net.ipv4.conf.all.accept_local)" = 0 ] ||
            lab_fail "accept_local is not 0 in $ns"
        lab_info "rs$n: 10.1.1.1$n on $if, $vip/32 on lo"
        lab_http_server "$ns" "rs$n" 80
        lab_udp_server "$ns" "rs$n" 53
    done

    lab_step "topology check without xlb: the client reaches each real server directly"
    for ((n = 1; n <= count; n++)); do
        body=$(ip netns exec "$LAB_CLIENT" curl -s --max-time 2 "http://10.1.1.1$n/index.html") ||
            lab_fail "client cannot reach rs$n at 10.1.1.1$n"
        [ "$body" = "rs$n" ] || lab_fail "10.1.1.1$n answered '$body', not rs$n"
        lab_info "curl http://10.1.1.1$n/index.html from the client: $body"
    done
}

# lab_two_subnets ROUTE: the NAT and FullNAT topology. The client (10.2.0.100/24) and the lb
# (10.2.0.2/24 on its interface `lbc`) share one veth; the lb (10.3.0.2/24 on `lbs`) and the
# real servers rs1, rs2 (10.3.0.11/24, 10.3.0.12/24) share a bridge in a namespace of its own.
# With ROUTE "default" the real servers' default route is via 10.3.0.2; with "none" they have
# only their own subnet. The lb's kernel does not forward. Each real server serves HTTP on
# :8080 and UDP on :5353 (other ports than the VIP's, so the translation shows).
lab_two_subnets() {
    local route=$1 n ns if body
    LAB_SW=$LAB_PREFIX-switch
    LAB_CLIENT=$LAB_PREFIX-client
    LAB_LB=$LAB_PREFIX-lb
    LAB_LB_OUT=$(lab_if lbc)
    LAB_LB_IN=$(lab_if lbs)
    lab_step "namespaces: client, lb, switch, rs1, rs2"
    for n in client lb switch rs1 rs2; do lab_ns "$n"; done
    lab_veth "$LAB_CLIENT" "$(lab_if c)" "$LAB_LB" "$LAB_LB_OUT"
    ip -n "$LAB_CLIENT" addr add 10.2.0.100/24 dev "$(lab_if c)"
    ip -n "$LAB_LB" addr add 10.2.0.2/24 dev "$LAB_LB_OUT"
    lab_bridge "$LAB_SW" "$(lab_if br)"
    lab_bridge_port "$LAB_SW" "$(lab_if br)" "$LAB_LB" "$LAB_LB_IN" "$(lab_if plb)"
    ip -n "$LAB_LB" addr add 10.3.0.2/24 dev "$LAB_LB_IN"
    lab_info "client 10.2.0.100 -- lb 10.2.0.2 ($LAB_LB_OUT) | lb 10.3.0.2 ($LAB_LB_IN) -- bridge in $LAB_SW"
    lab_info "lb: net.ipv4.ip_forward=$(ip netns exec "$LAB_LB" sysctl -n net.ipv4.ip_forward) (what crosses it is xlb's doing)"

    lab_step "real servers on 10.3.0.0/24, route: $route"
    for n in 1 2; do
        ns=$LAB_PREFIX-rs$n
        if=$(lab_if r$n)
        lab_bridge_port "$LAB_SW" "$(lab_if br)" "$ns" "$if" "$(lab_if pr$n)"
        ip -n "$ns" addr add "10.3.0.1$n/24" dev "$if"
        [ "$route" = none ] || ip -n "$ns" route add default via 10.3.0.2
        lab_info "rs$n: 10.3.0.1$n on $if; routes: $(ip -n "$ns" -o route show | cut -d' ' -f1-3 | lab_join_lines)"
        lab_http_server "$ns" "rs$n" 8080
        lab_udp_server "$ns" "rs$n" 5353
    done
    if ip -n "$LAB_CLIENT" route get 10.3.0.11 >/dev/null 2>&1; then
        lab_fail "the client has a route to the real servers"
    fi
    if [ "$route" = none ] && ip -n "$LAB_PREFIX-rs1" route get 10.2.0.100 >/dev/null 2>&1; then
        lab_fail "rs1 has a route to the client"
    fi

    lab_step "topology check without xlb: the lb reaches each real server; the client reaches neither"
    for n in 1 2; do
        body=$(ip netns exec "$LAB_LB" curl -s --max-time 2 "http://10.3.0.1$n:8080/index.html") ||
            lab_fail "the lb cannot reach rs$n at 10.3.0.1$n:8080"
        [ "$body" = "rs$n" ] || lab_fail "10.3.0.1$n:8080 answered '$body', not rs$n"
        lab_info "curl http://10.3.0.1$n:8080/index.html from the lb: $body"
    done
    lab_info "the client has no route to 10.3.0.0/24$([ "$route" = none ] && echo ", the real servers none to 10.2.0.0/24")"
}

# Joins the lines of stdin with ", ".
lab_join_lines() {
    paste -sd, - | sed 's/,/, /g'
}

# Decides PASS or FAIL and exits accordingly; the EXIT trap cleans up and prints the verdict
# as the last line.
lab_finish() {
    if ((${#LAB_FAILURES[@]})); then
        LAB_VERDICT="FAIL ($(lab_join '; ' "${LAB_FAILURES[@]}"))"
        exit 1
    fi
    LAB_VERDICT="PASS ($(lab_join '; ' "${LAB_RESULTS[@]}"))"
    exit 0
}

# lab_dr_config OUT SCHEDULER [HEALTH]: the DR lab's xlb config (lab/malformed, lab/failover,
# lab/restart, lab/soak): TCP VIP 10.1.1.10:80 and UDP :53 over rs1 and rs2 with SCHEDULER,
# and HEALTH (a `[service.health]` table, TOML) on the TCP service.
lab_dr_config() {
    local out=$1 scheduler=$2 health=${3-}
    cat >"$out" <<EOF
# lab $LAB_NAME: written by lab/$LAB_NAME for this run.
[[interface]]
name = "$LAB_LB_IF"
addr = "10.1.1.2/24"

[[service]]
vip = "10.1.1.10"
port = 80
proto = "tcp"
scheduler = "$scheduler"
forward = "dr"
$health
  [[service.backend]]
  addr = "10.1.1.11"

  [[service.backend]]
  addr = "10.1.1.12"

[[service]]
vip = "10.1.1.10"
port = 53
proto = "udp"
scheduler = "$scheduler"
forward = "dr"

  [[service.backend]]
  addr = "10.1.1.11"

  [[service.backend]]
  addr = "10.1.1.12"
EOF
}

# lab_metrics OUT: xlb's Prometheus text (`--metrics $LAB_METRICS`, in the lb's namespace)
# into OUT. Control renders it about once a second, from worker reports every 0.1 s.
lab_metrics() {
    ip netns exec "$LAB_LB" curl -s --max-time 2 "http://$LAB_METRICS/metrics" >"$1" ||
        lab_fail "scraping xlb's metrics at $LAB_METRICS"
}

# lab_metric FILE NAME [LABEL]: the sum of family NAME's samples in FILE (those whose labels
# contain LABEL, e.g. 'reason="truncated"'); 0 if none.
lab_metric() {
    awk -v name="$2" -v label="${3-}" '
        $1 == name || index($1, name "{") == 1 { if (label == "" || index($1, label)) sum += $2 }
        END { printf "%d\n", sum }' "$1"
}

# lab_curl_load NS URL OUT STOP MAX SECONDS: in the background, `curl -s --max-time 2 URL`
# one connection after another in NS until the file STOP exists (at most MAX requests and
# SECONDS), each logged in OUT as `START END ok BODY LOCAL_PORT` or `START END fail
# curl-CODE`; LAB_LOAD_PID is the loop's PID.
lab_curl_load() {
    # shellcheck disable=SC2016 # the loop runs in the namespace's bash
    ip netns exec "$1" bash -c '
        export LC_ALL=C
        for ((i = 0; i < $3 && SECONDS < $4; i++)); do
            [ -e "$2" ] && break
            start=$EPOCHREALTIME
            if out=$(curl -s --max-time "$5" -w " %{local_port}" "$1"); then r="ok $out"; else r="fail curl-$?"; fi
            # shellcheck disable=SC2086 # unquoted, the newline after the body goes
            echo "$start $EPOCHREALTIME" $r
        done' lab-curl-load "$2" "$4" "$5" "$6" "$LAB_TIMEOUT" >"$3" 2>&1 &
    LAB_LOAD_PID=$!
    LAB_PIDS+=("$LAB_LOAD_PID")
}

# lab_udp_load NS ADDR PORT OUT STOP MAX [INTERVAL]: in the background, lab/udp.py's
# request/responses (one flow each; one every INTERVAL seconds at most) in NS until the file
# STOP exists (at most MAX), each logged in OUT as `START END ok NAME CLIENT_PORT` or
# `START END fail REASON`; LAB_LOAD_PID is its PID.
lab_udp_load() {
    ip netns exec "$1" python3 "$LAB_SRC/udp.py" ask --addr "$2" --port "$3" --count "$6" \
        --timeout "$LAB_TIMEOUT" --until "$5" --stamps --interval "${7:-0}" >"$4" 2>&1 &
    LAB_LOAD_PID=$!
    LAB_PIDS+=("$LAB_LOAD_PID")
}

# lab_stop_load PID STOP: creates STOP and waits (at most 10 s) for the load PID to end.
lab_stop_load() {
    touch "$2"
    lab_wait 10 "the load (PID $1) to stop" lab_gone "$1"
    wait "$1" || lab_failure "the load (PID $1) exited with an error"
}

# lab_gone PID: whether PID is no longer a live child of this lab.
lab_gone() {
    ! lab_is_ours "$1"
}

# lab_xlb_rss: xlb's resident memory now, in KiB (VmRSS).
lab_xlb_rss() {
    awk '$1 == "VmRSS:" { print $2 }' "/proc/$LAB_XLB_PID/status"
}

# lab_log_problems: xlb's log lines at warn or error level.
# Lines start with an RFC 3339 timestamp (LAB_LOG_STAMP), then `xlb: LEVEL: `.
LAB_LOG_STAMP='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z '
lab_log_problems() {
    grep -E "^($LAB_LOG_STAMP)?xlb: (warn|error): " "$LAB_TMP/xlb.log" || true
}

# lab_log_problems_but_claims_on VIP: lab_log_problems without the ARP-conflict lines about
# VIP (and their "not logged" counts), for labs whose malformed corpus sends a gratuitous ARP
# claiming the VIP on purpose (xlb must log that, rate-limited).
lab_log_problems_but_claims_on() {
    lab_log_problems | grep -v -E -e "^($LAB_LOG_STAMP)?xlb: warn: ARP conflict: .* says it has ${1//./\\.}, " \
        -e "^($LAB_LOG_STAMP)?xlb: warn: [0-9]* more ARP conflict\\(s\\) not logged\$" || true
}

# lab_now: the time now, in seconds (microseconds after the point).
lab_now() {
    LC_ALL=C printf '%s' "$EPOCHREALTIME"
}

# lab_elapsed FROM TO: TO - FROM in seconds, two decimals.
lab_elapsed() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'
}

# lab_wait_log PATTERN SECONDS WHAT: polls xlb's log every 20 ms until a line matches the
# extended regex PATTERN; LAB_SEEN is when the lab saw it. Fails the lab after SECONDS.
lab_wait_log() {
    local pattern=$1 seconds=$2 what=$3 i
    for ((i = 0; i < seconds * 50; i++)); do
        if grep -qE "$pattern" "$LAB_TMP/xlb.log"; then
            # shellcheck disable=SC2034 # read by the labs
            LAB_SEEN=$(lab_now)
            return 0
        fi
        sleep 0.02
    done
    lab_fail "$what: not within $seconds s"
}

# lab_hold NS ADDR CONNS OUT STOP: in the background, lab/hold.py's CONNS keep-alive HTTP
# connections to ADDR:80 in NS (a request on each every 0.1 s, 2 s timeout) until the file
# STOP exists (at most 300 s); LAB_HOLD_PID is its PID. Waits (bounded) until every
# connection has been answered once.
lab_hold() {
    local i
    ip netns exec "$1" python3 -u "$LAB_SRC/hold.py" --addr "$2" --conns "$3" --interval 0.1 \
        --timeout "$LAB_TIMEOUT" --seconds 300 --until "$5" >"$4" 2>&1 &
    LAB_HOLD_PID=$!
    LAB_PIDS+=("$LAB_HOLD_PID")
    for ((i = 0; i < 100; i++)); do
        (($(awk '$3 == "ok" && !seen[$2]++' "$4" | wc -l) >= $3)) && return 0
        lab_is_ours "$LAB_HOLD_PID" || lab_fail "lab/hold.py ended: $(tail -3 "$4" | lab_join_lines)"
        sleep 0.1
    done
    lab_fail "lab/hold.py: not every connection answered within 10 s"
}

# lab_held OUT [FROM]: tallies lab/hold.py's log OUT per real server: HELD_rs1, HELD_rs2
# (connections), BROKEN_rs1, BROKEN_rs2 (of those, broken or moved at FROM or later, or at
# any time without FROM), ASKED (requests answered from FROM on).
lab_held() {
    local out=$1 from=${2:-0}
    # shellcheck disable=SC2034 # read by the labs
    read -r HELD_rs1 HELD_rs2 BROKEN_rs1 BROKEN_rs2 ASKED < <(awk -v from="$from" '
        $3 == "ok" && !($2 in name) { name[$2] = $4 }
        $3 == "ok" && $1 >= from { asked++ }
        ($3 == "broken" || $3 == "moved") && $1 >= from { broken[$2] = 1 }
        END {
            for (c in name) { held[name[c]]++; if (c in broken) lost[name[c]]++ }
            printf "%d %d %d %d %d\n", held["rs1"], held["rs2"], lost["rs1"], lost["rs2"], asked
        }' "$out")
}

# lab_corpus_fates LABELS INJECTED OUT: each corpus frame's fate, one line each in OUT,
# `CLASS<TAB>FATE`: `unsent:ERRNO` (the kernel refused to send it), `kernel` (the XDP program
# passes it by), `missing` (lab/inject.py said nothing of it), or the verdict its label says
# xlb gives it. LABELS is `xlb corpus`'s output, INJECTED lab/inject.py's.
lab_corpus_fates() {
    awk -F'\t' '
        FNR == NR { split($0, word, " "); sent[word[1]] = (word[2] == "sent") ? "" : word[3]; next }
        FNR == 1 { next }
        {
            fate = ($1 in sent) ? (sent[$1] != "" ? "unsent:" sent[$1] : ($3 == "yes" ? $4 : "kernel")) : "missing"
            print $2 "\t" fate
        }' <(grep -v '^#' "$2") "$1" >"$3"
}

# lab_check_drops BEFORE AFTER FATES: xlb's drops by reason between two scrapes must be
# exactly those of the corpus frames FATES (lab_corpus_fates) says it drops so; prints the
# table, records a failure per reason that differs; DROP_OK is how many drops agreed.
lab_check_drops() {
    local reason expected counted
    DROP_OK=0
    lab_info "| xlb counter                 | corpus frames labelled so | xlb counted (after - before)"
    for reason in $(awk '$1 ~ /^xlb_core_drops_total\{/ { match($1, /reason="[a-z0-9_]*"/); print substr($1, RSTART + 8, RLENGTH - 9) }' "$2" | sort -u); do
        expected=$(awk -F'\t' -v v="drop:$reason" '$2 == v' "$3" | wc -l)
        counted=$(($(lab_metric "$2" xlb_core_drops_total "reason=\"$reason\"") - $(lab_metric "$1" xlb_core_drops_total "reason=\"$reason\"")))
        ((expected == 0 && counted == 0)) && continue
        lab_info "$(printf '| drop %-22s | %25d | %d' "$reason" "$expected" "$counted")"
        if ((expected == counted)); then
            DROP_OK=$((DROP_OK + counted))
        else
            lab_failure "drops for $reason: xlb counted $counted, the corpus has $expected"
        fi
    done
}

# lab_regex_quote TEXT: TEXT with the characters an extended regex treats specially escaped.
lab_regex_quote() {
    printf '%s' "$1" | sed 's/[][\\.*^$()+?{}|]/\\&/g'
}

# --- IPv6 (lab/dr6, lab/dualstack) ---
#
# IPv6 addresses are added with `nodad` (usable at once: duplicate address detection would
# hold them tentative for a second or more). The bridges of the IPv6 topologies have MLD
# snooping off, so a solicited-node multicast frame reaches every port as on a plain switch
# whoever has or has not reported its group.

# lab_addr6 NS IF ADDR/PREFIX: an IPv6 address, without duplicate address detection.
lab_addr6() {
    ip -n "$1" -6 addr add "$3" dev "$2" nodad
}

# lab_http_server6 NS NAME PORT: `python3 -m http.server` on [::]:PORT in NS (log
# http6-NAME), serving an index.html that says NAME; waits (bounded) until it listens.
lab_http_server6() {
    local ns=$1 name=$2 port=$3 dir="$LAB_TMP/www-$2"
    mkdir -p "$dir"
    echo "$name" >"$dir/index.html"
    lab_bg "$ns" "http6-$name" python3 -m http.server --bind :: --directory "$dir" \
        ${LAB_HTTP_PROTOCOL:+--protocol "$LAB_HTTP_PROTOCOL"} "$port"
    lab_wait 10 "$name's HTTP server on [::]:$port" lab_listening "$ns" tcp "$port"
    lab_info "$name: HTTP on [::]:$port (python3 -m http.server, says '$name')"
}

# lab_udp_server6 NS NAME PORT: lab/udp.py's IPv6 server on [::]:PORT in NS (log udp6-NAME),
# answering every datagram from the address it was sent to (IPV6_PKTINFO).
lab_udp_server6() {
    local ns=$1 name=$2 port=$3
    lab_bg "$ns" "udp6-$name" python3 -u "$LAB_SRC/udp.py" serve --family 6 --name "$name" \
        --port "$port"
    lab_wait 10 "$name's UDP server on [::]:$port" lab_listening "$ns" udp "$port"
    lab_info "$name: UDP on [::]:$port (lab/udp.py --family 6, answers '$name')"
}

# lab_http_clients6 NS URL N OUT: lab_http_clients with `curl -6 -g` (URL with a bracketed
# IPv6 address).
lab_http_clients6() {
    # shellcheck disable=SC2016 # the loop runs in the namespace's bash
    lab_run "$4" ip netns exec "$1" bash -c '
        for ((i = 0; i < $2; i++)); do
            if out=$(curl -6 -g -s --max-time "$3" -w " %{local_port}" "$1"); then echo ok $out; else echo "fail curl-$?"; fi
        done' lab-http-client "$2" "$3" "$LAB_TIMEOUT"
}

# lab_clients6 CLIENT_NS VIP HTTP_KIND UDP_KIND: the client's HTTP requests to [VIP]:80
# (curl -6) and UDP request/responses to [VIP]:53, tallied per real server as HTTP_KIND and
# UDP_KIND (lab_tally).
lab_clients6() {
    local client=$1 vip=$2 http=$3 udp=$4
    lab_step "client: $LAB_REQUESTS x curl -6 -s --max-time $LAB_TIMEOUT http://[$vip]/"
    lab_http_clients6 "$client" "http://[$vip]/" "$LAB_REQUESTS" "$LAB_TMP/$http.out"
    lab_tally "$http" "$LAB_TMP/$http.out" "$LAB_REQUESTS" rs1 rs2
    lab_step "client: $LAB_REQUESTS UDP request/responses to [$vip]:53 (lab/udp.py, one flow each)"
    lab_udp_clients "$client" "$vip" 53 "$LAB_REQUESTS" "$LAB_TMP/$udp.out"
    lab_tally "$udp" "$LAB_TMP/$udp.out" "$LAB_REQUESTS" rs1 rs2
}

# lab_no_forwarding6 NS: fails the lab unless NS's kernel forwards no IPv6.
lab_no_forwarding6() {
    [ "$(ip netns exec "$1" sysctl -n net.ipv6.conf.all.forwarding)" = 0 ] ||
        lab_fail "$1 forwards IPv6"
}

# lab_dr6_topology VIP N: lab_dr_topology in IPv6 (lab/dr6). The client (2001:db8:1::100/64),
# the lb (2001:db8:1::2/64 and 10.1.1.2/24 on `lb`, no VIP, no forwarding) and N real servers
# rs1..rsN (2001:db8:1::1N/64) share one bridge in a namespace of its own. The real servers
# are configured the usual IPv6 DR way and nothing else: VIP/128 on `lo` (Linux answers a
# neighbour solicitation only for an address of the interface it came in on, so they never
# answer for the VIP). Each serves HTTP on [::]:80 and UDP on [::]:53. Ends with topology
# checks without xlb: the client reaches each real server directly; routed to one (a host
# route to the VIP via its address) it gets an answer from the VIP, HTTP and UDP; without
# that route nobody answers for the VIP. Sets LAB_SW, LAB_CLIENT, LAB_LB and LAB_LB_IF.
lab_dr6_topology() {
    local vip=$1 count=$2 n ns if body answer roles=(switch client lb) br
    LAB_SW=$LAB_PREFIX-switch
    LAB_CLIENT=$LAB_PREFIX-client
    LAB_LB=$LAB_PREFIX-lb
    LAB_LB_IF=$(lab_if lb)
    br=$(lab_if br)
    for ((n = 1; n <= count; n++)); do roles+=("rs$n"); done
    lab_step "namespaces: $(lab_join ', ' "${roles[@]}")"
    for n in "${roles[@]}"; do lab_ns "$n"; done
    lab_bridge "$LAB_SW" "$br"
    ip -n "$LAB_SW" link set "$br" type bridge mcast_snooping 0
    lab_bridge_port "$LAB_SW" "$br" "$LAB_CLIENT" "$(lab_if c)" "$(lab_if pc)"
    lab_bridge_port "$LAB_SW" "$br" "$LAB_LB" "$LAB_LB_IF" "$(lab_if plb)"
    lab_addr6 "$LAB_CLIENT" "$(lab_if c)" 2001:db8:1::100/64
    lab_addr6 "$LAB_LB" "$LAB_LB_IF" 2001:db8:1::2/64
    ip -n "$LAB_LB" addr add 10.1.1.2/24 dev "$LAB_LB_IF"
    lab_no_forwarding6 "$LAB_LB"
    lab_info "bridge $br in $LAB_SW (MLD snooping off); client 2001:db8:1::100, lb 2001:db8:1::2 ($LAB_LB_IF, no VIP, no forwarding)"

    lab_step "real servers: VIP $vip/128 on lo, nothing else"
    for ((n = 1; n <= count; n++)); do
        ns=$LAB_PREFIX-rs$n
        if=$(lab_if r$n)
        lab_bridge_port "$LAB_SW" "$br" "$ns" "$if" "$(lab_if pr$n)"
        lab_addr6 "$ns" "$if" "2001:db8:1::1$n/64"
        lab_addr6 "$ns" lo "$vip/128"
        lab_info "rs$n: 2001:db8:1::1$n on $if, $vip/128 on lo"
        lab_http_server6 "$ns" "rs$n" 80
        lab_udp_server6 "$ns" "rs$n" 53
    done

    lab_step "topology check without xlb"
    for ((n = 1; n <= count; n++)); do
        body=$(ip netns exec "$LAB_CLIENT" curl -6 -g -s --max-time 2 "http://[2001:db8:1::1$n]/index.html") ||
            lab_fail "client cannot reach rs$n at 2001:db8:1::1$n"
        [ "$body" = "rs$n" ] || lab_fail "2001:db8:1::1$n answered '$body', not rs$n"
        lab_info "curl -6 http://[2001:db8:1::1$n]/index.html from the client: $body"
    done
    for ((n = 1; n <= count; n++)); do
        ip -n "$LAB_CLIENT" -6 route add "$vip/128" via "2001:db8:1::1$n"
        body=$(ip netns exec "$LAB_CLIENT" curl -6 -g -s --max-time 2 "http://[$vip]/index.html") ||
            lab_fail "routed to rs$n, the client gets no HTTP answer from the VIP"
        [ "$body" = "rs$n" ] || lab_fail "routed to rs$n, the VIP answered '$body'"
        answer=$(ip netns exec "$LAB_CLIENT" python3 "$LAB_SRC/udp.py" ask --addr "$vip" --port 53 --count 1 --timeout 2)
        [[ $answer == "ok rs$n "* ]] || lab_fail "routed to rs$n, UDP to the VIP: $answer"
        ip -n "$LAB_CLIENT" -6 route del "$vip/128" via "2001:db8:1::1$n"
        lab_info "routed via rs$n, the VIP answers from rs$n (HTTP '$body', UDP '$answer'): its DR setup works"
    done
    if ip netns exec "$LAB_CLIENT" curl -6 -g -s --max-time 1 "http://[$vip]/index.html" >/dev/null; then
        lab_fail "without xlb, something answers for the VIP $vip"
    fi
    ip -n "$LAB_CLIENT" -6 neigh flush dev "$(lab_if c)"
    lab_info "without the route, nobody answers for $vip (no real server answers NDP for it)"
}

# lab_two_subnets6 ROUTE: lab_two_subnets, dual-stack (lab/dualstack). IPv6 beside each IPv4
# address: the client 2001:db8:2::100/64 and the lb 2001:db8:2::2/64 on one veth; the lb
# 2001:db8:3::2/64 and the real servers 2001:db8:3::11/64, ::12 on the bridge (MLD snooping
# off). With ROUTE "default" the real servers' IPv6 default route is via 2001:db8:3::2 too;
# with "none" they have only their own subnets. The lb's kernel forwards neither family.
# Each real server serves HTTP on :8080 (IPv4) and [::]:8086, UDP on :5353 and [::]:5356.
lab_two_subnets6() {
    local route=$1 n ns body
    lab_two_subnets "$route"
    lab_step "IPv6 beside IPv4: 2001:db8:2::/64 (client side), 2001:db8:3::/64 (real servers)"
    ip -n "$LAB_SW" link set "$(lab_if br)" type bridge mcast_snooping 0
    lab_addr6 "$LAB_CLIENT" "$(lab_if c)" 2001:db8:2::100/64
    lab_addr6 "$LAB_LB" "$LAB_LB_OUT" 2001:db8:2::2/64
    lab_addr6 "$LAB_LB" "$LAB_LB_IN" 2001:db8:3::2/64
    lab_no_forwarding6 "$LAB_LB"
    for n in 1 2; do
        ns=$LAB_PREFIX-rs$n
        lab_addr6 "$ns" "$(lab_if r$n)" "2001:db8:3::1$n/64"
        [ "$route" = none ] || ip -n "$ns" -6 route add default via 2001:db8:3::2
        lab_info "rs$n: 2001:db8:3::1$n; IPv6 routes: $(ip -n "$ns" -6 -o route show | grep -v '^fe80' | cut -d' ' -f1-3 | lab_join_lines)"
        lab_http_server6 "$ns" "rs$n" 8086
        lab_udp_server6 "$ns" "rs$n" 5356
    done
    if ip -n "$LAB_CLIENT" -6 route get 2001:db8:3::11 >/dev/null 2>&1; then
        lab_fail "the client has an IPv6 route to the real servers"
    fi
    if [ "$route" = none ] && ip -n "$LAB_PREFIX-rs1" -6 route get 2001:db8:2::100 >/dev/null 2>&1; then
        lab_fail "rs1 has an IPv6 route to the client"
    fi
    lab_step "IPv6 topology check without xlb: the lb reaches each real server; the client neither"
    for n in 1 2; do
        body=$(ip netns exec "$LAB_LB" curl -6 -g -s --max-time 2 "http://[2001:db8:3::1$n]:8086/index.html") ||
            lab_fail "the lb cannot reach rs$n at [2001:db8:3::1$n]:8086"
        [ "$body" = "rs$n" ] || lab_fail "[2001:db8:3::1$n]:8086 answered '$body', not rs$n"
        lab_info "curl -6 http://[2001:db8:3::1$n]:8086/index.html from the lb: $body"
    done
}
