/*
 * san: placeholder entry point until registration lands (issue 3): it knows
 * its version and says what is coming, so that scripts get an honest answer.
 */
#include <stdio.h>
#include <string.h>

#include "iselab-version.h"

int
main(int argc, char **argv)
{
	if (argc == 2 && (strcmp(argv[1], "--version") == 0 ||
			     strcmp(argv[1], "version") == 0)) {
		printf("san (ise-lab) %s\n", ISELAB_VERSION);
		return 0;
	}
	fprintf(stderr, "san: join and run arrive with node registration "
			"(issue 3); only --version works in this build\n");
	return 2;
}
