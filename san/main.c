/*
 * san: thin entry point; each subcommand lives in its own file.
 */
#include "cli.h"
#include "util.h"
#include "san.h"

static const struct cli_command commands[] = {
    {"join", san_join_main,
     "join a deployment with the string `pan node add` printed"},
    {"run", san_run_main, "run the node in the foreground"},
    {"status", san_status_main,
     "show this node, its PAN link, certificates and services"},
};

int
main(int argc, char **argv)
{
	return cli_dispatch("san", commands, ARRAY_SIZE(commands), argc, argv);
}
