#!/bin/bash
# EC2 user data for the ECS-optimized Amazon Linux 2023 AMI (or any AL2023
# host): efscache on the instance, shared by every task through a host
# volume.  The .deb cannot be installed there: this uses the release tarball
# (contrib/release/build-tarball.sh), copied to a bucket of yours first.
# Set the four values below.  The EFS mount comes from amazon-efs-utils
# (installed when missing).  See contrib/ecs/README.md.
set -euo pipefail
EFS_ID=fs-0123456789abcdef0
TARBALL=s3://my-bucket/efscache/efscache-0.1.0-x86_64-linux.tar.gz
CLUSTER=my-cluster
CACHE_SIZE=100G

# EFS at /mnt/efs (efscache's unit waits for it: RequiresMountsFor below).
command -v mount.efs >/dev/null || dnf install -y amazon-efs-utils
mkdir -p /mnt/efs /mnt/efscache/models /var/cache/efscache
echo "$EFS_ID:/ /mnt/efs efs _netdev,tls,noresvport 0 0" >>/etc/fstab
mount /mnt/efs

# efscache from the release tarball (static: nothing else to install).
aws s3 cp "$TARBALL" /tmp/efscache.tar.gz
tar -C /opt -xzf /tmp/efscache.tar.gz
/opt/efscache-*/install.sh /usr/local
cat >/etc/default/efscache <<CONF
EFSCACHE_SOURCE=/mnt/efs
EFSCACHE_MOUNTPOINT=/mnt/efscache/models
EFSCACHE_OPTIONS=cache_dir=/var/cache/efscache,cache_size=$CACHE_SIZE,cache_min_free=20%,allow_other,require_source_mount=nfs4
CONF
# Tasks must not start before the mount: the ECS agent waits for efscache.
mkdir -p /etc/systemd/system/ecs.service.d
cat >/etc/systemd/system/ecs.service.d/efscache.conf <<CONF
[Unit]
Wants=efscache.service
After=efscache.service
CONF
mkdir -p /etc/systemd/system/efscache.service.d
cat >/etc/systemd/system/efscache.service.d/efs.conf <<CONF
[Unit]
RequiresMountsFor=/mnt/efs
CONF
echo "ECS_CLUSTER=$CLUSTER" >>/etc/ecs/ecs.config
systemctl daemon-reload
systemctl enable --now efscache.service
