/*
 * ctl: send argv to a node's control socket and print the answer, as a
 * service of the node does (e.g. `ctl D alarm raise NAME major TEXT`).
 * Exit status: the daemon's, or 1 when nobody answered.
 */
#include <stdio.h>
#include <stdlib.h>

#include "proc.h"
#include "util.h"

int
main(int argc, char **argv)
{
	struct error err = {{0}};
	char *out = NULL, *errtext = NULL;
	int status = 1;

	if (argc < 3) {
		fprintf(stderr, "usage: ctl DATADIR WORD...\n");
		return 2;
	}
	if (control_call(argv[1], (const char *const *)argv + 2, argc - 2,
	                 5000, &out, &errtext, &status, &err) == -1) {
		fprintf(stderr, "ctl: %s\n", err.msg);
		return 1;
	}
	fputs(out, stdout);
	fputs(errtext, stderr);
	free(out);
	free(errtext);
	return status;
}
