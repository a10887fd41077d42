/*
 * pan: thin entry point; each subcommand lives in its own file.
 */
#include <stdio.h>
#include <string.h>

#include "iselab-version.h"
#include "pan.h"

static const struct {
	const char *name;
	int (*main)(int, char **);
	const char *help;
} commands[] = {
    {"init", pan_init_main,
     "create a deployment: Root CA, Node CA, "
     "CURVE keys, store"},
    {"run", pan_run_main,
     "run the PAN daemon: messaging, events, "
     "CA signer, control socket"},
    {"node", pan_node_main, "add (join string), list or remove nodes"},
    {"ca", pan_ca_main,
     "ca certs [--pem]: the deployment's CA "
     "certificates"},
    {"cert", pan_cert_main,
     "cert list|show: the certificates the deployment issued"},
    {"alarms", pan_alarms_main,
     "active alarms (--all: cleared ones "
     "too)"},
    {"status", pan_status_main,
     "show this node, its CA certificates "
     "and its services"},
};

static void
usage(FILE *fp)
{
	size_t i;

	fprintf(fp, "usage: pan <command> [options]   (pan <command> --help)"
	            "\n\ncommands:\n");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(fp, "  %-8s %s\n", commands[i].name, commands[i].help);
}

int
main(int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		usage(stderr);
		return PAN_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--version") == 0 ||
	    strcmp(argv[1], "version") == 0) {
		printf("pan (ise-lab) %s\n", ISELAB_VERSION);
		return PAN_EXIT_OK;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return PAN_EXIT_OK;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].main(argc - 1, argv + 1);
	fprintf(stderr, "pan: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return PAN_EXIT_USAGE;
}
