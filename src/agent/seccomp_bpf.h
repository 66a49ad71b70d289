// The seccomp filter of a task compiled once in the agent instead of at every container start.
// crun compiles the OCI linux.seccomp section with libseccomp each time it starts a container
// (about a fifth of its start here); it takes a program compiled beforehand from its
// run.oci.seccomp_bpf_data annotation. The agent compiles the section with the same libseccomp
// calls in the same order as crun does, so the program is the same, byte for byte (tested
// against crun's own), and keeps one per distinct section: a task's section depends only on the
// profile and the task's capabilities.
#pragma once

#include <boost/json/fwd.hpp>
#include <mutex>
#include <string>
#include <unordered_map>

#include "coffer/base/error.h"

namespace coffer::agent {

// The classic BPF program for an OCI linux.seccomp object, as crun 1.x makes it. invalid_argument
// for an action, operator or architecture libseccomp does not know.
Result<std::string> compile_seccomp_bpf(const boost::json::object& seccomp);

// compile_seccomp_bpf, base64-encoded as the annotation wants it, once per distinct section.
// Thread-safe.
class SeccompPrograms {
  public:
    Result<std::string> base64_for(const boost::json::object& seccomp);

  private:
    std::mutex mu_;
    std::unordered_map<std::string, std::string> by_section_;  // serialized section -> base64
};

}  // namespace coffer::agent
