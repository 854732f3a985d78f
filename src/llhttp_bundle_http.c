/* llhttp built from its C sources (configure: --with-llhttp-source, or
 * Debian's node-llhttp): this unit compiles http.c from that directory. */
#include "http.c"
