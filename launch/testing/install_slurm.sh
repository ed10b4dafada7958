#!/usr/bin/env bash
# Install the Debian packages of a single-host Slurm (slurmctld, slurmd, slurm-client, munge) for the
# tests of launch/. Idempotent: returns at once when the commands are already there. Needs root and
# apt-get. The daemons are NOT started here (packaging is told not to start services); the test
# fixture (launch/testing/local_slurm.py) writes its own configuration and starts them by hand.
set -euo pipefail

need=()
for cmd in slurmctld slurmd sbatch munged; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "[slurm] already installed ($(dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || echo unknown version))"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "[slurm] installing Slurm needs root (missing: ${need[*]})" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[slurm] apt-get not found: install slurmctld, slurmd, slurm-client and munge by other means" >&2
  exit 1
fi

# Without systemd, package scripts would try (and fail) to start the daemons: a policy-rc.d that
# answers 101 ("action forbidden") makes invoke-rc.d skip them. Remove it afterwards unless it was ours.
POLICY=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$POLICY"
  chmod +x "$POLICY"
  ours=1
fi
cleanup() { if [ "$ours" = 1 ]; then rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/tmp/spt-slurm-apt.log 2>&1; then
  apt-get update -q >>/tmp/spt-slurm-apt.log 2>&1
  apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >>/tmp/spt-slurm-apt.log 2>&1 || {
    tail -20 /tmp/spt-slurm-apt.log >&2
    echo "[slurm] apt-get install failed (log: /tmp/spt-slurm-apt.log)" >&2
    exit 1
  }
fi
echo "[slurm] installed ($(dpkg-query -W -f='${Version}' slurmctld))"
