// coffer's default seccomp profile: the rules of Docker's default profile, so that a task may do
// what it may do under Docker, and no more.
#pragma once

#include <boost/json/value.hpp>

namespace coffer::agent {

// The profile in the format Docker and containers-common use (archMap; rules with
// includes/excludes on architectures, capabilities and kernel versions), which seccomp_for turns
// into a task's OCI section. Unlisted calls fail with EPERM. Namespaces, mounts and the other
// administrative calls (clone with namespace flags, clone3, unshare, setns, mount, umount2, the
// new mount API, bpf, perf_event_open...) are allowed only with CAP_SYS_ADMIN, and other
// privileged calls only with their capability; keyctl, add_key, request_key, pivot_root and
// userfaultfd are never allowed, whatever the capabilities.
boost::json::value default_seccomp_profile();

}  // namespace coffer::agent
