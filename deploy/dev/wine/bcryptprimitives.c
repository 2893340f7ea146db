/*
 * bcryptprimitives.dll for Wine 8, which lacks it.
 *
 * Rust's standard library (1.78 and later) takes its random numbers from ProcessPrng in
 * bcryptprimitives.dll, which every Windows since 10 has. Debian 12's Wine 8 ships no such
 * DLL, so a Rust program for x86_64-pc-windows-gnu does not even start there. This DLL,
 * put beside the program's .exe, gives it ProcessPrng from the older RtlGenRandom
 * (advapi32's SystemFunction036), which Wine has. It is for running the worker under Wine
 * in the tests only: a real Windows has its own DLL, and the worker never ships this one.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll bcryptprimitives.c
 */
#include <windows.h>

/* RtlGenRandom's real name, as advapi32 exports it. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* Fills `data` with `length` random bytes; RtlGenRandom takes at most a ULONG at once. */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
