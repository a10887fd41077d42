/*
 * psn: thin entry point; each subcommand lives in its own file.
 */
#include "cli.h"
#include "util.h"
#include "psn.h"
#include "services.h"

static const struct cli_command commands[] = {
    {"join", psn_join_main,
     "join a deployment with the string `pan node add` printed"},
    {"run", psn_run_main, "run the node in the foreground"},
    {"status", psn_status_main,
     "show this node, its PAN link, certificates and services"},
    {"service", psn_service_main,
     "run the CA service or the EST server in the foreground"},
};

int
main(int argc, char **argv)
{
	return cli_dispatch("psn", commands, ARRAY_SIZE(commands), argc, argv);
}
