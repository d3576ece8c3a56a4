#!/bin/sh
# A one-node Slurm cluster on loopback for the test suite (docs/hpc.md).
#
#   cluster.sh DIR    start munged, slurmctld and slurmd with all state under DIR, wait
#                     until the node is idle, print "ready" on stdout, then wait for EOF
#                     on stdin and stop the daemons by their PIDs.
#
# The test process holds our stdin open, so the daemons go away when it exits, however it
# exits. Must run as root (slurmd starts jobs as their users). Needs Debian's slurm-wlm
# and munge.
set -eu
dir=$1
mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
chmod 0755 "$dir"
ctld_port=${GROVE_SLURM_PORT:-16817}
slurmd_port=$((ctld_port + 1))
cpus=8

# munge: our own key and socket, so a host munged (if any) is not involved.
chmod 0700 "$dir/munge"
dd if=/dev/urandom of="$dir/munge/key" bs=1024 count=1 2>/dev/null
chmod 0400 "$dir/munge/key"
munged --force --key-file="$dir/munge/key" --socket="$dir/munge/sock" \
       --pid-file="$dir/munge/pid" --log-file="$dir/log/munged.log" \
       --seed-file="$dir/munge/seed"
chmod 0755 "$dir/munge"

cat > "$dir/slurm.conf" <<CONF
ClusterName=grove
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=5
MinJobAge=10
NodeName=grove0 NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=grove Nodes=grove0 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF="$dir/slurm.conf"

slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF" -N grove0

stop() {
    for p in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/pid"; do
        [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
    done
}
trap stop EXIT

i=0
until sinfo -h -o '%T' 2>/dev/null | grep -qx idle; do
    i=$((i + 1))
    if [ $i -gt 120 ]; then
        echo "slurm node not idle after 60 s; logs in $dir/log" >&2
        sinfo >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo ready
cat > /dev/null
stop
trap - EXIT
# The daemons' state and logs go too, unless asked to keep test directories.
if [ -z "${GROVE_KEEP_TEST_DIRS:-}" ]; then
    sleep 1
    rm -rf "$dir"
fi
