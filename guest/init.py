"""The guest's boot scripts: /init, the busybox inittab, the command channel.

Boot sequence inside the guest (all busybox):

1. /init (pid 1, a shell script): mounts proc, sys, devtmpfs and devpts,
   installs the busybox applet links, insmods the modules listed in
   /etc/mnet/modules (already in dependency order), brings up lo, sets the
   hostname and configures eth0 from the kernel command line (mnet.ip,
   mnet.gw, mnet.hostname, mnet.wait), then execs busybox init.
2. busybox init (reaps orphans, handles poweroff) respawns two things from
   /etc/inittab: a login shell on the console (through cttyhack, so job
   control works) and the command channel on /dev/ttyS1.

Every line the scripts print for humans and tests starts with MARKER.
The channel's line protocol is described in docs/guest.md and implemented on
the host by guest.channel.
"""

from __future__ import annotations

MARKER = "mnet-guest:"
#: Printed once the command channel listens; hosts may watch the console for it.
CHANNEL_READY_MARKER = f"{MARKER} command channel on ttyS1 ready"
#: Printed by /init just before it hands over to busybox init.
BOOT_DONE_MARKER = f"{MARKER} boot done"

MODULE_LIST = "/etc/mnet/modules"
CHANNEL_DEVICE = "/dev/ttyS1"

INIT_SCRIPT = r"""#!/bin/busybox sh
# mnet guest /init: mount, load modules, configure the network, then busybox init.
/bin/busybox --install -s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "mnet-guest: $*"; }

mkdir -p /proc /sys /dev /tmp /run /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp

MNET_IP= MNET_GW= MNET_HOSTNAME=mnet-guest MNET_WAIT=10
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        mnet.ip=*) MNET_IP=${arg#mnet.ip=} ;;
        mnet.gw=*) MNET_GW=${arg#mnet.gw=} ;;
        mnet.hostname=*) MNET_HOSTNAME=${arg#mnet.hostname=} ;;
        mnet.wait=*) MNET_WAIT=${arg#mnet.wait=} ;;
    esac
done

loaded=
while read -r module; do
    [ -n "$module" ] || continue
    if insmod "$module"; then
        name=${module##*/}
        loaded="$loaded ${name%.ko}"
    else
        say "insmod $module FAILED"
    fi
done < /etc/mnet/modules
say "modules loaded:$loaded"

hostname "$MNET_HOSTNAME"
ip link set lo up

if [ -n "$MNET_IP" ]; then
    # virtio_net usually probes during insmod; wait a bounded time in case it is late.
    tries=$((MNET_WAIT * 10))
    while [ ! -e /sys/class/net/eth0 ] && [ "$tries" -gt 0 ]; do
        usleep 100000
        tries=$((tries - 1))
    done
fi
if [ -e /sys/class/net/eth0 ]; then
    mac=$(cat /sys/class/net/eth0/address)
    ip link set eth0 up
    if [ -z "$MNET_IP" ]; then
        say "eth0 $mac up (no address)"
    elif ip addr add "$MNET_IP" dev eth0; then
        say "eth0 $MNET_IP up ($mac)"
        if [ -n "$MNET_GW" ]; then
            ip route add default via "$MNET_GW" dev eth0 && say "default route via $MNET_GW" \
                || say "default route via $MNET_GW FAILED"
        fi
    else
        say "eth0 address $MNET_IP FAILED"
    fi
elif [ -n "$MNET_IP" ]; then
    say "no eth0 after ${MNET_WAIT}s, mnet.ip=$MNET_IP not configured"
else
    say "no eth0"
fi

read -r uptime rest < /proc/uptime
say "boot done in ${uptime}s, hostname $MNET_HOSTNAME"
exec /bin/busybox init
"""

INITTAB = """\
# busybox init: console shell and command channel, both respawned.
::respawn:/etc/mnet/channel
::respawn:/etc/mnet/console
::ctrlaltdel:/sbin/poweroff -f
"""

CONSOLE_SCRIPT = r"""#!/bin/sh
# Login shell on the kernel console; cttyhack makes it the controlling tty.
echo "mnet-guest: console shell ready (type 'poweroff -f' to stop the VM)"
exec /bin/cttyhack /bin/sh -l
"""

CHANNEL_SCRIPT = r"""#!/bin/sh
# mnet command channel on /dev/ttyS1; the protocol is described in docs/guest.md.
#   host -> guest:  PING <id> | RUN <id> <base64 command> | KILL <id>
#   guest -> host:  PONG <id> | BEGIN <id>, base64 output lines, END <id> <status>
#                   | ERR <id> <reason>
# Overridable so the script can be tested on the host against a pty.
PROFILE=${MNET_PROFILE:-/etc/profile}
[ -r "$PROFILE" ] && . "$PROFILE"
DEV=${MNET_CHANNEL_DEV:-/dev/ttyS1}
WORK=${MNET_CHANNEL_WORK:-/run/mnet}
CR=$(printf '\r')
rm -rf "$WORK"
mkdir -p "$WORK"

exec 3<>"$DEV" || { echo "mnet-guest: cannot open $DEV"; sleep 5; exit 1; }
# raw: no line editing, no CR/LF mangling, no signals from bytes; -echo: our
# input must not come back to the host; clocal: ignore modem lines.
stty -F "$DEV" raw -echo clocal 115200 || echo "mnet-guest: stty on $DEV failed"
echo "mnet-guest: command channel on ${DEV#/dev/} ready"

# One whole reply from stdin to the host. The lock (mkdir is atomic) keeps
# replies of commands that finish together from interleaving.
send() {
    until mkdir "$WORK/lock" 2>/dev/null; do usleep 10000; done
    cat >&3
    rmdir "$WORK/lock"
}

valid_id() {
    case "$1" in
        ''|*[!A-Za-z0-9_.-]*) return 1 ;;
    esac
    return 0
}

# SIGTERM to a command's session. The pid itself too: until the child has
# called setsid() its session does not exist yet, and the child must not live
# on to start the command.
stop_command() {
    kill -TERM "-$1" "$1" 2>/dev/null
}

# The main loop has made "$WORK/cmd-$1" already (see RUN below).
run_command() {
    id=$1
    dir="$WORK/cmd-$id"
    if printf '%s' "$2" | base64 -d > "$dir/cmd" 2>/dev/null; then
        # A session of its own, so KILL can stop everything the command started.
        setsid sh "$dir/cmd" < /dev/null > "$dir/out" 2>&1 3>&- &
        pid=$!
        # Renamed into place, so KILL never reads half a pid.
        echo $pid > "$dir/pid.new" && mv "$dir/pid.new" "$dir/pid"
        # A KILL that looked before the pid was there left this flag: the pid
        # is written first and the flag read second, the reverse of KILL, so
        # one of the two always sees the other.
        [ -f "$dir/kill" ] && stop_command $pid
        wait $pid
        status=$?
        { echo "BEGIN $id"; base64 "$dir/out"; echo "END $id $status"; } > "$dir/reply"
        send < "$dir/reply"
    else
        echo "ERR $id bad-base64" | send
    fi
    # Renamed away first (atomic), so a late KILL cannot drop a file into a
    # directory that rm -rf is emptying.
    mv "$dir" "$WORK/done-$id" && rm -rf "$WORK/done-$id"
}

while :; do
    if ! IFS= read -r line <&3; then
        sleep 1
        continue
    fi
    set -f
    set -- ${line%"$CR"}
    set +f
    case "$1" in
        PING)
            [ $# -eq 2 ] && valid_id "$2" && echo "PONG $2" | send ;;
        RUN)
            if [ $# -eq 3 ] && valid_id "$2"; then
                # The command's directory is made here, before the next line is
                # read: a duplicate id is refused in the order the RUNs came,
                # and a KILL that follows always finds its command.
                if mkdir "$WORK/cmd-$2" 2>/dev/null; then
                    # Double fork: the handler is reparented to init, which reaps it.
                    # Its stderr is dropped so "Terminated" after KILL stays off the console.
                    ( run_command "$2" "$3" 2>/dev/null & )
                else
                    echo "ERR $2 duplicate-id" | send
                fi
            elif [ $# -ge 2 ] && valid_id "$2"; then
                echo "ERR $2 bad-request" | send
            fi ;;
        KILL)
            # Flag first, pid second (run_command does the reverse): a KILL
            # that comes before the command has started is not lost.
            if [ $# -eq 2 ] && valid_id "$2" && [ -d "$WORK/cmd-$2" ]; then
                { : > "$WORK/cmd-$2/kill"; } 2>/dev/null
                pid=$(cat "$WORK/cmd-$2/pid" 2>/dev/null) && stop_command "$pid"
            fi ;;
        *) ;;  # garbage (e.g. half a line from before the host connected): ignored
    esac
done
"""


def profile(library_dirs: list[str] | tuple[str, ...] = ()) -> str:
    """/etc/profile: PATH, LD_LIBRARY_PATH for libraries outside ld.so's defaults, prompt."""
    lines = [
        "# mnet guest profile",
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "export HOME=/root",
    ]
    if library_dirs:
        lines.append("export LD_LIBRARY_PATH=" + ":".join(library_dirs))
    lines += [r"PS1='\h:\w\$ '", ""]
    return "\n".join(lines)


def guest_files(module_paths: list[str] | tuple[str, ...],
                library_dirs: list[str] | tuple[str, ...] = ()) -> dict[str, tuple[str, int]]:
    """Image path -> (text, mode) for every boot file the image needs.

    module_paths: image paths of the .ko files in load order.
    library_dirs: directories to add to LD_LIBRARY_PATH (those ld.so would not search).
    """
    return {
        "/init": (INIT_SCRIPT, 0o755),
        "/etc/inittab": (INITTAB, 0o644),
        "/etc/profile": (profile(library_dirs), 0o644),
        "/etc/mnet/console": (CONSOLE_SCRIPT, 0o755),
        "/etc/mnet/channel": (CHANNEL_SCRIPT, 0o755),
        MODULE_LIST: ("".join(f"{p}\n" for p in module_paths), 0o644),
    }
