/* llhttp built from its C sources (configure: --with-llhttp-source, or
 * Debian's node-llhttp): this unit compiles llhttp.c from that directory. */
#include "llhttp.c"
