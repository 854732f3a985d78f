/* llhttp built from its C sources (configure: --with-llhttp-source, or
 * Debian's node-llhttp): this unit compiles api.c from that directory. */
#include "api.c"
