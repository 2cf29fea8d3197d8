/*
 * Test-only shim for Wine 8.0 (Debian 12), which lacks bcryptprimitives.dll.
 * Rust's std imports ProcessPrng from it on Windows (since Rust 1.78); real
 * Windows 10 and later ship the DLL, and so does Wine 9. run-foreign.sh
 * builds this with mingw and puts it into its own Wine prefix only; it is
 * never shipped. ProcessPrng fills the buffer from RtlGenRandom.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x7fffffff ? 0x7fffffff : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
