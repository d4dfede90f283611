"""A real SLURM cluster on this host: slurmctld and two slurmd emulating two nodes.

Debian's ``slurm-wlm`` (SLURM 22.05) and ``munge``, installed with apt-get when missing (as
root). Both nodes share ``NodeAddr=127.0.0.1`` on their own ports; each has two "GPUs"
(gres entries backed by plain files: SLURM needs ``File=`` entries, not the devices); process
tracking is ``proctrack/cgroup``, so a job's processes end with it. Everything (configuration,
state, spool, logs) lives in one temporary folder; :meth:`SlurmCluster.stop` ends exactly the
daemons this class started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
NODES = ("node1", "node2")
GPUS_PER_NODE = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def install() -> str | None:
    """Install SLURM and munge if missing; the reason it cannot, or None."""
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged")):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "SLURM is not installed and cannot be (needs root and apt-get)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        if result.returncode:
            return f"{' '.join(command)} failed: {result.stderr[-2000:]}"
    return None


class SlurmCluster:
    """Start with :meth:`start`; ``env`` then points the SLURM commands at this cluster."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.processes: list[subprocess.Popen] = []
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def _write_config(self) -> None:
        root = self.root
        for name in ("state", "spool", "log"):
            (root / name).mkdir(parents=True, exist_ok=True)
        gres = []
        for index, node in enumerate(NODES):
            devices = [root / f"gpu{index * GPUS_PER_NODE + g}" for g in range(GPUS_PER_NODE)]
            for device in devices:
                device.touch()
            gres.append(f"NodeName={node} Name=gpu File={root}/gpu[{index * GPUS_PER_NODE}-"
                        f"{index * GPUS_PER_NODE + GPUS_PER_NODE - 1}]")
        nodes = [f"NodeName={node} NodeAddr=127.0.0.1 Port={free_port()} CPUs=2 Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN"
                 for node in NODES]
        self.conf.write_text("\n".join([
            "ClusterName=r1coretest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={root}/state",
            f"SlurmdSpoolDir={root}/spool/%n",
            f"SlurmctldPidFile={root}/slurmctld.pid",
            f"SlurmdPidFile={root}/slurmd.%n.pid",
            f"SlurmctldLogFile={root}/log/slurmctld.log",
            f"SlurmdLogFile={root}/log/slurmd.%n.log",
            # cgroup tracking: every process of a job step, the ones that detach included,
            # is found and signalled (proctrack/linuxproc loses reparented children).
            "ProctrackType=proctrack/cgroup",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "GresTypes=gpu",
            "ReturnToService=2",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SlurmdParameters=config_overrides",
            "MinJobAge=3600",
            "KillWait=30",
            *nodes,
            f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES",
            "",
        ]))
        (root / "gres.conf").write_text("\n".join(gres) + "\n")
        (root / "cgroup.conf").write_text("CgroupPlugin=autodetect\nIgnoreSystemd=yes\nConstrainCores=no\n"
                                          "ConstrainRAMSpace=no\nConstrainDevices=no\n")

    def start(self, timeout: float = 60.0) -> None:
        self._write_config()
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode:
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            subprocess.run(["munged", "--force"], check=True, capture_output=True)
        log = self.root / "log"
        self.processes.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(self.conf)], env=self.env,
                                               stdout=open(log / "slurmctld.out", "w"), stderr=subprocess.STDOUT))
        for node in NODES:
            self.processes.append(subprocess.Popen(["slurmd", "-D", "-N", node, "-f", str(self.conf)], env=self.env,
                                                   stdout=open(log / f"slurmd.{node}.out", "w"),
                                                   stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env, capture_output=True,
                                    text=True).stdout.split()
            if states.count("idle") == len(NODES):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the SLURM nodes did not come up: {states}; see {log}")

    def sbatch(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env={**self.env, **(env or {})},
                                capture_output=True, text=True, check=True)
        return result.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields (JobState, ExitCode, NodeList, ...)."""
        text = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=self.env, capture_output=True,
                              text=True, check=True).stdout
        return dict(field.split("=", 1) for field in text.split() if "=" in field)

    def wait(self, job_id: str, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fields = self.job(job_id)
            if fields["JobState"] not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
                return fields
            time.sleep(1.0)
        subprocess.run(["scancel", job_id], env=self.env)
        raise TimeoutError(f"job {job_id} still {self.job(job_id)['JobState']} after {timeout} s")

    def signal(self, job_id: str, name: str) -> None:
        subprocess.run(["scancel", f"--signal={name}", job_id], env=self.env, check=True)

    def stop(self) -> None:
        subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True)
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
