#!/usr/bin/env bash
# Install OpenMPI 4 (mpirun, libmpi.so.40) where it is missing: Debian's openmpi-bin through apt-get, as root.
#   bash scripts/install_openmpi.sh
# scripts/run_tests.sh calls it: the tests of the mpirun launch need it, and skip with that reason without it.
# Elsewhere install OpenMPI 4.x yourself (Ubuntu: sudo apt-get install openmpi-bin; RHEL: dnf install openmpi).
set -euo pipefail
if command -v mpirun >/dev/null; then
  echo "install_openmpi: $(mpirun --version 2>&1 | head -n 1) is installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_openmpi: mpirun not found, and installing it needs root and apt-get; install OpenMPI 4.x" \
    "(sudo apt-get install openmpi-bin): until then the mpirun tests skip" >&2
  exit 1
fi
echo "install_openmpi: installing Debian's openmpi-bin (OpenMPI 4)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin >/dev/null
echo "install_openmpi: $(mpirun --version 2>&1 | head -n 1) is installed"
