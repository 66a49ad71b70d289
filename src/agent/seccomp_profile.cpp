#include "seccomp_profile.h"

#include <boost/json.hpp>
#include <cstdint>
#include <string_view>
#include <vector>

namespace coffer::agent {
namespace json = boost::json;
namespace {

constexpr std::string_view allow = "SCMP_ACT_ALLOW";
constexpr std::string_view deny = "SCMP_ACT_ERRNO";

struct Arg {
    unsigned index;
    std::uint64_t value;
    std::string_view op;
};

// A rule applies where every condition of its includes holds and none of its excludes does.
struct When {
    std::vector<std::string_view> arches;  // Go's names: amd64, arm64, x86...
    std::vector<std::string_view> caps;
    std::string_view min_kernel;
};

struct Rule {
    std::vector<std::string_view> names;
    std::string_view action = allow;
    int errno_ret = 0;  // with SCMP_ACT_ERRNO
    std::vector<Arg> args;
    When includes;
    When excludes;
};

// The flags that make clone create namespaces: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
// NEWPID, NEWNET. Without CAP_SYS_ADMIN, clone is allowed only when none of them is set.
constexpr std::uint64_t clone_namespace_flags = 0x7E020000;
constexpr std::uint64_t af_vsock = 40;
constexpr int enosys = 38;

// Docker's default profile (moby profiles/seccomp/default.json), as it is since pkey_* and
// name_to_handle_at are allowed, AF_VSOCK sockets refused and CAP_BPF and CAP_PERFMON have rules
// of their own. The architectures: those coffer builds for.
const std::vector<Rule>& docker_rules() {
    // The first list packed, as Docker keeps it.
    // clang-format off
    static const std::vector<Rule> rules = {
        {.names = {
                 "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget",
                 "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime",
                 "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
                 "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close",
                 "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3",
                 "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
                 "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve",
                 "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
                 "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat",
                 "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
                 "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64",
                 "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
                 "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd", "getdents",
                 "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
                 "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid",
                 "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
                 "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list",
                 "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid",
                 "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch",
                 "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl",
                 "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
                 "ioprio_get", "ioprio_set", "io_setup", "io_submit", "io_uring_enter",
                 "io_uring_register", "io_uring_setup", "ipc", "kill", "landlock_add_rule",
                 "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
                 "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "_llseek",
                 "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "membarrier",
                 "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat",
                 "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr",
                 "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
                 "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget",
                 "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
                 "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat",
                 "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
                 "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64",
                 "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease",
                 "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read",
                 "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
                 "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename",
                 "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
                 "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
                 "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
                 "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
                 "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
                 "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
                 "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
                 "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
                 "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid",
                 "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
                 "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
                 "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32",
                 "setrlimit", "set_robust_list", "setsid", "setsockopt", "set_thread_area",
                 "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt",
                 "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask",
                 "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64", "statfs",
                 "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
                 "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
                 "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
                 "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
                 "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
                 "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime",
                 "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid",
                 "waitpid", "write", "writev",
         }},
        // clang-format on
        {.names = {"process_vm_readv", "process_vm_writev", "ptrace"},
         .includes = {.min_kernel = "4.8"}},
        {.names = {"socket"}, .args = {{0, af_vsock, "SCMP_CMP_NE"}}},
        // personality: the Linux domain, with UNAME26 and/or ADDR_NO_RANDOMIZE, or a query.
        {.names = {"personality"}, .args = {{0, 0x0, "SCMP_CMP_EQ"}}},
        {.names = {"personality"}, .args = {{0, 0x8, "SCMP_CMP_EQ"}}},
        {.names = {"personality"}, .args = {{0, 0x20000, "SCMP_CMP_EQ"}}},
        {.names = {"personality"}, .args = {{0, 0x20008, "SCMP_CMP_EQ"}}},
        {.names = {"personality"}, .args = {{0, 0xffffffff, "SCMP_CMP_EQ"}}},
        {.names = {"sync_file_range2", "swapcontext"}, .includes = {.arches = {"ppc64le"}}},
        {.names = {"arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
                   "cacheflush", "set_tls"},
         .includes = {.arches = {"arm", "arm64"}}},
        {.names = {"arch_prctl"}, .includes = {.arches = {"amd64", "x32"}}},
        {.names = {"modify_ldt"}, .includes = {.arches = {"amd64", "x32", "x86"}}},
        {.names = {"s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"},
         .includes = {.arches = {"s390", "s390x"}}},
        {.names = {"riscv_flush_icache"}, .includes = {.arches = {"riscv64"}}},
        {.names = {"open_by_handle_at"}, .includes = {.caps = {"CAP_DAC_READ_SEARCH"}}},
        {.names = {"bpf",           "clone",         "clone3",      "fanotify_init",   "fsconfig",
                   "fsmount",       "fsopen",        "fspick",      "lookup_dcookie",  "mount",
                   "mount_setattr", "move_mount",    "open_tree",   "perf_event_open", "quotactl",
                   "quotactl_fd",   "setdomainname", "sethostname", "setns",           "syslog",
                   "umount",        "umount2",       "unshare"},
         .includes = {.caps = {"CAP_SYS_ADMIN"}}},
        {.names = {"clone"},
         .args = {{0, clone_namespace_flags, "SCMP_CMP_MASKED_EQ"}},
         .excludes = {.arches = {"s390", "s390x"}, .caps = {"CAP_SYS_ADMIN"}}},
        // s390 passes clone's flags second.
        {.names = {"clone"},
         .args = {{1, clone_namespace_flags, "SCMP_CMP_MASKED_EQ"}},
         .includes = {.arches = {"s390", "s390x"}},
         .excludes = {.caps = {"CAP_SYS_ADMIN"}}},
        // ENOSYS: the C library falls back to clone, whose flags the filter can read (clone3's
        // are behind a pointer).
        {.names = {"clone3"},
         .action = deny,
         .errno_ret = enosys,
         .excludes = {.caps = {"CAP_SYS_ADMIN"}}},
        {.names = {"reboot"}, .includes = {.caps = {"CAP_SYS_BOOT"}}},
        {.names = {"chroot"}, .includes = {.caps = {"CAP_SYS_CHROOT"}}},
        {.names = {"delete_module", "init_module", "finit_module"},
         .includes = {.caps = {"CAP_SYS_MODULE"}}},
        {.names = {"acct"}, .includes = {.caps = {"CAP_SYS_PACCT"}}},
        {.names = {"kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
                   "process_vm_writev", "ptrace"},
         .includes = {.caps = {"CAP_SYS_PTRACE"}}},
        {.names = {"iopl", "ioperm"}, .includes = {.caps = {"CAP_SYS_RAWIO"}}},
        {.names = {"settimeofday", "stime", "clock_settime", "clock_settime64"},
         .includes = {.caps = {"CAP_SYS_TIME"}}},
        {.names = {"vhangup"}, .includes = {.caps = {"CAP_SYS_TTY_CONFIG"}}},
        {.names = {"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"},
         .includes = {.caps = {"CAP_SYS_NICE"}}},
        {.names = {"syslog"}, .includes = {.caps = {"CAP_SYSLOG"}}},
        {.names = {"bpf"}, .includes = {.caps = {"CAP_BPF"}}},
        {.names = {"perf_event_open"}, .includes = {.caps = {"CAP_PERFMON"}}},
    };
    return rules;
}

json::array strings(const std::vector<std::string_view>& v) {
    json::array a;
    for (auto s : v) a.emplace_back(s);
    return a;
}

json::object condition(const When& w) {
    json::object o;
    if (!w.arches.empty()) o["arches"] = strings(w.arches);
    if (!w.caps.empty()) o["caps"] = strings(w.caps);
    if (!w.min_kernel.empty()) o["minKernel"] = w.min_kernel;
    return o;
}

}  // namespace

json::value default_seccomp_profile() {
    json::array syscalls;
    for (const auto& r : docker_rules()) {
        json::object rule{{"names", strings(r.names)}, {"action", r.action}};
        if (r.action == deny) rule["errnoRet"] = r.errno_ret;
        if (!r.args.empty()) {
            json::array args;
            for (const auto& a : r.args)
                args.push_back(json::object{{"index", a.index}, {"value", a.value}, {"op", a.op}});
            rule["args"] = std::move(args);
        }
        if (auto inc = condition(r.includes); !inc.empty()) rule["includes"] = std::move(inc);
        if (auto exc = condition(r.excludes); !exc.empty()) rule["excludes"] = std::move(exc);
        syscalls.push_back(std::move(rule));
    }
    auto arch = [](std::string_view main, std::vector<std::string_view> sub) {
        return json::object{{"architecture", main}, {"subArchitectures", strings(sub)}};
    };
    return json::object{
        {"defaultAction", deny},
        {"defaultErrnoRet", 1},  // EPERM
        {"archMap", json::array{arch("SCMP_ARCH_X86_64", {"SCMP_ARCH_X86", "SCMP_ARCH_X32"}),
                                arch("SCMP_ARCH_AARCH64", {"SCMP_ARCH_ARM"})}},
        {"syscalls", std::move(syscalls)},
    };
}

}  // namespace coffer::agent
