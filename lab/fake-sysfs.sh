#!/bin/sh
# Runs inside a lab host at boot (halo-lab-fake-sysfs.service): lays the lab's fake GPU files
# (and /proc/meminfo, so the host has the RAM of a Strix Halo box)
# (/var/lib/halo-lab/sysfs/<path>, written by the lab on the machine that runs it) over the real
# /sys/<path>, so facts read them at the paths a Strix Halo kernel uses. Only files are faked.
#
# Each top-level entry listed in /var/lib/halo-lab/sysfs/MOUNTS (e.g. "class/drm") is bind-mounted
# over /sys/<entry>. sysfs cannot create directories, so when /sys/<entry> does not exist its
# parent is first replaced by a tmpfs that carries the parent's real entries (bind mounts and
# the same relative symlinks), plus the new mount point.
set -eu
fake=/var/lib/halo-lab/sysfs
stash=/run/halo-lab/real-sys
[ -f "$fake/MOUNTS" ] || exit 0

shadow_parent() {
    parent=$1
    [ -d "$stash/$parent" ] && return 0
    mkdir -p "$stash/$parent"
    mount --bind "/sys/$parent" "$stash/$parent"
    mount --make-private "$stash/$parent"  # or the tmpfs below would propagate into the stash
    mount -t tmpfs -o mode=0755 halo-lab-sysfs "/sys/$parent"
    for real in "$stash/$parent"/* ; do
        [ -e "$real" ] || [ -L "$real" ] || continue
        entry=/sys/$parent/${real##*/}
        if [ -L "$real" ]; then
            ln -s "$(readlink "$real")" "$entry"
        elif [ -d "$real" ]; then
            mkdir "$entry" && mount --bind "$real" "$entry"
        else
            : > "$entry" && mount --bind "$real" "$entry"
        fi
    done
}

while read -r path; do
    [ -n "$path" ] || continue
    target=/sys/$path
    if [ ! -d "$target" ]; then
        shadow_parent "${path%/*}"
        mkdir -p "$target"
    fi
    mount --bind "$fake/$path" "$target"
done < "$fake/MOUNTS"

# The RAM size the kernel reports: /proc/meminfo of a box with the chosen amount of memory.
if [ -f /var/lib/halo-lab/proc/meminfo ]; then
    mount --bind /var/lib/halo-lab/proc/meminfo /proc/meminfo
fi
# The kernel command line it was booted with (the lab hosts share this machine's kernel).
if [ -f /var/lib/halo-lab/proc/cmdline ]; then
    mount --bind /var/lib/halo-lab/proc/cmdline /proc/cmdline
fi
