// Everything CCompression adds is static inline in include/CCompression.h; SwiftPM needs one
// C source file for the target to exist.
#include "CCompression.h"
