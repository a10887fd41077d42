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
     "show this node, its PAN link, replica lag, certificates and services"},
    {"alarms", san_view_main,
     "the deployment's alarms, from the replica ([--all])"},
    {"node", san_view_main,
     "node list: the deployment's nodes, from the replica; once promoted, "
     "node add|remove|edit too"},
    {"promote", san_promote_main,
     "make this SAN the primary (needs the imported CA store)"},
    {"user", san_user_main,
     "add, remove or list EST enrollment users (promoted SAN)"},
    {"template", san_view_main,
     "add, list or remove certificate templates (promoted SAN)"},
    {"ca", san_ca_main,
     "ca import: load the PAN's CA store (pan ca export)"},
    {"cert", san_view_main,
     "cert list: the issued certificates, from the replica; once "
     "promoted, cert show|revoke|hold|release too"},
};

int
main(int argc, char **argv)
{
	return cli_dispatch("san", commands, ARRAY_SIZE(commands), argc, argv);
}
