// A static program for the test images: makes the system calls no busybox applet makes and prints,
// for each name given, "NAME ok" or "NAME errno N". Exits 0 unless a name is unknown.
//   keyctl         keyctl(KEYCTL_GET_KEYRING_ID) on the process keyring, creating it
//   add_key        a "user" key in the process keyring
//   request_key    a "user" key that does not exist (ENOKEY where the call is allowed)
//   clone_newuser  clone(CLONE_NEWUSER): a child in a new user namespace, which exits at once
#include <linux/keyctl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace {

long clone_newuser() {
    long pid = ::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, 0);
    if (pid == 0) ::_exit(0);
    if (pid < 0) return pid;
    int status = 0;
    ::waitpid(static_cast<pid_t>(pid), &status, 0);
    return 0;
}

constexpr long unknown = -2;  // the calls return -1 on failure, never -2

long call(const char* name) {
    if (std::strcmp(name, "keyctl") == 0)
        return ::syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING, 1);
    if (std::strcmp(name, "add_key") == 0)
        return ::syscall(SYS_add_key, "user", "coffer-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING);
    if (std::strcmp(name, "request_key") == 0)
        return ::syscall(SYS_request_key, "user", "coffer-probe-missing", nullptr, 0);
    if (std::strcmp(name, "clone_newuser") == 0) return clone_newuser();
    return unknown;
}

}  // namespace

int main(int argc, char** argv) {
    int rc = 0;
    for (int i = 1; i < argc; ++i) {
        long r = call(argv[i]);
        if (r == unknown) {
            std::printf("%s unknown\n", argv[i]);
            rc = 2;
        } else if (r < 0) {
            std::printf("%s errno %d\n", argv[i], errno);
        } else {
            std::printf("%s ok\n", argv[i]);
        }
    }
    return rc;
}
