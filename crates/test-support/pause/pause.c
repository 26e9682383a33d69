/* The pod sandbox's pause process for the CRI tests, built static by the
 * test (cc -static) because no registry with the upstream pause image can be
 * reached. It holds the pod's namespaces, reaps children, and exits on
 * SIGTERM or SIGINT, as the upstream one does. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction stop_action = {.sa_handler = stop};
    struct sigaction reap_action = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    if (sigaction(SIGTERM, &stop_action, NULL) < 0 || sigaction(SIGINT, &stop_action, NULL) < 0 ||
        sigaction(SIGCHLD, &reap_action, NULL) < 0) {
        return 1;
    }
    for (;;) {
        pause();
    }
}
