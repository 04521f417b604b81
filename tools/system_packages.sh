#!/usr/bin/env bash
# The Debian/Ubuntu packages the book needs beyond Python: git and rsync (DVC, chapter 08), Node 20 and npm
# (chapter 08's gitlab-ci-local), Chromium and its driver (the browser test), and Prometheus, Alertmanager
# and the Pushgateway (chapters 11 and 12 start them; Debian names the last two prometheus-alertmanager and
# prometheus-pushgateway), PostgreSQL and OpenSSH's server (the class server, deploy/class_server.py, and its
# test). apt.txt gives Binder the same list but the last two: a student's Binder never hosts the class server.
#   tools/system_packages.sh check     list what is missing (exit 1 if anything is)
#   tools/system_packages.sh install   install what is missing with apt-get (as root), else say how
set -euo pipefail
cd "$(dirname "$0")/.."

# command on PATH -> Debian package that provides it
declare -A PACKAGE=([git]=git [rsync]=rsync [node]=nodejs [npm]=npm [chromium]=chromium
                    [chromedriver]=chromium-driver [prometheus]=prometheus [promtool]=prometheus
                    [prometheus-alertmanager]=prometheus-alertmanager [amtool]=prometheus-alertmanager
                    [prometheus-pushgateway]=prometheus-pushgateway [initdb]=postgresql [sshd]=openssh-server)

missing=()
for tool in "${!PACKAGE[@]}"; do
  case "$tool" in  # upstream's names, as Homebrew and the release archives install them, count too
    prometheus-alertmanager) command -v alertmanager >/dev/null && continue ;;
    prometheus-pushgateway) command -v pushgateway >/dev/null && continue ;;
    initdb) compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && continue ;;  # Debian keeps it off PATH
    sshd) [ -x /usr/sbin/sshd ] && continue ;;                                        # not on a user's PATH
  esac
  command -v "$tool" >/dev/null || missing+=("${PACKAGE[$tool]}")
done
# node and npm come together from NodeSource or nvm; Debian's nodejs is only wanted when node itself is missing
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
[ -z "${packages// /}" ] && exit 0

if [ "${1:-check}" = install ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  exit 0
fi
echo "missing system packages: $packages" >&2
echo "  Debian/Ubuntu: sudo apt-get install $packages" >&2
echo "  macOS: brew install prometheus alertmanager pushgateway node chromium postgresql (git and rsync come with Xcode)" >&2
exit 1
