/* config.h for GNU make 4.3 on Linux with musl and TinyCC, written by hand.

   Why by hand: make-dfsg's orig tarball is a snapshot of make's git tree
   without the generated configure script, so configure cannot run without
   autoconf and automake, which the tree does not build.  Every answer below
   is what configure finds for musl 1.2.3 on x86_64 Linux, kept to what
   make's POSIX sources test.  Left undefined on purpose: USE_POSIX_SPAWN
   (make forks and execs, so gnulib's findprog is not needed), HAVE_GUILE and
   MAKE_LOAD (no Guile, no dlopen in a static program), ENABLE_NLS.  */

#define PACKAGE "make"
#define PACKAGE_BUGREPORT "bug-make@gnu.org"
#define PACKAGE_NAME "GNU make"
#define PACKAGE_STRING "GNU make 4.3"
#define PACKAGE_TARNAME "make"
#define PACKAGE_URL "http://www.gnu.org/software/make/"
#define PACKAGE_VERSION "4.3"
#define VERSION "4.3"
/* what `make --version` and $(MAKE_HOST) report */
#define MAKE_HOST "x86_64-pc-linux-musl"

#define MAKE_JOBSERVER 1
#define MAKE_SYMLINKS 1
#define FILE_TIMESTAMP_HI_RES 1
#define ST_MTIM_NSEC st_mtim.tv_nsec
#define PATH_SEPARATOR_CHAR ':'
#define RETSIGTYPE void
#define SCCS_GET "get"
#define STDC_HEADERS 1
#define TIME_WITH_SYS_TIME 1

#define HAVE_ALLOCA 1
#define HAVE_ALLOCA_H 1
#define HAVE_ATEXIT 1
#define HAVE_CLOCK_GETTIME 1
#define HAVE_DECL_BSD_SIGNAL 1
#define HAVE_DECL_DLERROR 0
#define HAVE_DECL_DLOPEN 0
#define HAVE_DECL_DLSYM 0
#define HAVE_DECL_GETDTABLESIZE 1
#define HAVE_DECL_PROGRAM_INVOCATION_NAME 1
#define HAVE_DECL_PROGRAM_INVOCATION_SHORT_NAME 1
#define HAVE_DECL_STRERROR_R 1
#define HAVE_DECL_SYS_SIGLIST 0
#define HAVE_DECL__SYS_SIGLIST 0
#define HAVE_DECL___SYS_SIGLIST 0
#define HAVE_DECL___ARGV 0
#define HAVE_DIRENT_H 1
#define HAVE_DUP 1
#define HAVE_DUP2 1
#define HAVE_FCNTL 1
#define HAVE_FCNTL_H 1
#define HAVE_FDOPEN 1
#define HAVE_FORK 1
#define HAVE_WORKING_FORK 1
#define HAVE_GETCWD 1
#define HAVE_GETDTABLESIZE 1
#define HAVE_GETGROUPS 1
#define HAVE_GETLOADAVG 1
#define HAVE_GETRLIMIT 1
#define HAVE_GETTIMEOFDAY 1
#define HAVE_INTTYPES_H 1
#define HAVE_ISATTY 1
#define HAVE_LIMITS_H 1
#define HAVE_LOCALE_H 1
#define HAVE_LONG_LONG_INT 1
#define HAVE_LSTAT 1
#define HAVE_MEMORY_H 1
#define HAVE_MEMRCHR 1
#define HAVE_MKSTEMP 1
#define HAVE_MKTEMP 1
#define HAVE_PIPE 1
#define HAVE_PSELECT 1
#define HAVE_READLINK 1
#define HAVE_REALPATH 1
#define HAVE_SA_RESTART 1
#define HAVE_SETEGID 1
#define HAVE_SETEUID 1
#define HAVE_SETLINEBUF 1
#define HAVE_SETREGID 1
#define HAVE_SETREUID 1
#define HAVE_SETRLIMIT 1
#define HAVE_SETVBUF 1
#define HAVE_SIGACTION 1
#define HAVE_STDINT_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STPCPY 1
#define HAVE_STRCASECMP 1
#define HAVE_STRCOLL 1
#define HAVE_STRDUP 1
#define HAVE_STRERROR_R 1
#define HAVE_STRINGS_H 1
#define HAVE_STRING_H 1
#define HAVE_STRNCASECMP 1
#define HAVE_STRNDUP 1
#define HAVE_STRSIGNAL 1
#define HAVE_STRUCT_DIRENT_D_TYPE 1
#define HAVE_SYMLINK 1
#define HAVE_SYS_FILE_H 1
#define HAVE_SYS_PARAM_H 1
#define HAVE_SYS_RESOURCE_H 1
#define HAVE_SYS_SELECT_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TIME_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_SYS_WAIT_H 1
#define HAVE_TTYNAME 1
#define HAVE_UINTMAX_T 1
#define HAVE_UMASK 1
#define HAVE_UNISTD_H 1
#define HAVE_UNSIGNED_LONG_LONG_INT 1
#define HAVE_WAIT3 1
#define HAVE_WAITPID 1
#define HAVE_WCHAR_H 1
#define HAVE__BOOL 1
/* musl's vfork is fine, but make's fork path is the simpler one to trust */
#define vfork fork
