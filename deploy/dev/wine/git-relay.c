/*
 * git.exe for the worker under Wine: hands each git command to Linux's git.
 *
 * The worker checks every task's commit out with git. On Windows that is Git for Windows;
 * under Wine there is none (and its POSIX layer runs badly there), so the Windows worker
 * the tests run under Wine finds this git.exe beside its own .exe instead. It sends its
 * working directory and arguments, as UTF-8, to the relay named by KILN_WINE_GIT_RELAY
 * (host:port on loopback; the test harness serves it, tests/src/wine.rs), which turns
 * drive paths into Unix paths, runs /usr/bin/git, and sends back its output and exit code.
 * What git itself does on Windows (paths, line endings, locks) is therefore not tested.
 *
 * Wire format, every integer 32-bit little-endian:
 *   to the relay:   count, then `count` strings (length, bytes): the directory, then argv[1..]
 *   from the relay: frames (kind byte, length, bytes): 1 stdout, 2 stderr, 3 exit code
 *
 * Build: x86_64-w64-mingw32-gcc -O2 -municode -o git.exe git-relay.c -lws2_32
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <shellapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The exit code when the relay cannot be reached or goes away: git's own for a fatal error. */
#define RELAY_FAILED 128

static int fail(const char *what)
{
    fprintf(stderr, "git (Wine relay): %s (error %d)\n", what, WSAGetLastError());
    return RELAY_FAILED;
}

static int send_all(SOCKET s, const char *data, int length)
{
    while (length > 0) {
        int sent = send(s, data, length, 0);
        if (sent <= 0)
            return 0;
        data += sent;
        length -= sent;
    }
    return 1;
}

static int recv_all(SOCKET s, char *data, int length)
{
    while (length > 0) {
        int got = recv(s, data, length, 0);
        if (got <= 0)
            return 0;
        data += got;
        length -= got;
    }
    return 1;
}

static int send_u32(SOCKET s, unsigned int value)
{
    unsigned char bytes[4] = {value, value >> 8, value >> 16, value >> 24};
    return send_all(s, (const char *)bytes, 4);
}

/* Sends `text` as a length and its UTF-8 bytes. */
static int send_wide(SOCKET s, const wchar_t *text)
{
    int length = WideCharToMultiByte(CP_UTF8, 0, text, -1, NULL, 0, NULL, NULL);
    char *utf8 = malloc(length > 0 ? length : 1);
    int ok = utf8 && length > 0
        && WideCharToMultiByte(CP_UTF8, 0, text, -1, utf8, length, NULL, NULL) == length
        && send_u32(s, length - 1) && send_all(s, utf8, length - 1);
    free(utf8);
    return ok;
}

/* Writes all of `data` to a standard handle; a closed reader is not git's problem. */
static void write_handle(DWORD which, const char *data, DWORD length)
{
    HANDLE handle = GetStdHandle(which);
    while (length > 0) {
        DWORD written = 0;
        if (!WriteFile(handle, data, length, &written, NULL) || written == 0)
            return;
        data += written;
        length -= written;
    }
}

int wmain(void)
{
    const char *relay = getenv("KILN_WINE_GIT_RELAY");
    if (!relay || !*relay) {
        fprintf(stderr, "git (Wine relay): KILN_WINE_GIT_RELAY is not set\n");
        return RELAY_FAILED;
    }
    char host[256];
    const char *colon = strrchr(relay, ':');
    if (!colon || colon - relay >= (int)sizeof host) {
        fprintf(stderr, "git (Wine relay): KILN_WINE_GIT_RELAY is not host:port\n");
        return RELAY_FAILED;
    }
    memcpy(host, relay, colon - relay);
    host[colon - relay] = 0;

    WSADATA wsa;
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
        return fail("cannot start Winsock");
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &found) != 0 || !found)
        return fail("cannot resolve the relay");
    SOCKET s = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    if (s == INVALID_SOCKET || connect(s, found->ai_addr, (int)found->ai_addrlen) != 0)
        return fail("cannot connect to the relay");
    freeaddrinfo(found);

    int argc = 0;
    wchar_t **argv = CommandLineToArgvW(GetCommandLineW(), &argc);
    wchar_t directory[32768];
    if (!argv || !GetCurrentDirectoryW(32768, directory))
        return fail("cannot read the command line or the directory");
    int ok = send_u32(s, argc) && send_wide(s, directory);
    for (int i = 1; ok && i < argc; i++)
        ok = send_wide(s, argv[i]);
    if (!ok)
        return fail("cannot send the command to the relay");

    static char buffer[65536];
    for (;;) {
        unsigned char header[5];
        if (!recv_all(s, (char *)header, 5))
            return fail("the relay went away before git ended");
        unsigned int length = header[1] | header[2] << 8 | header[3] << 16
            | (unsigned int)header[4] << 24;
        if (length > sizeof buffer || !recv_all(s, buffer, length))
            return fail("the relay sent a broken frame");
        switch (header[0]) {
        case 1:
            write_handle(STD_OUTPUT_HANDLE, buffer, length);
            break;
        case 2:
            write_handle(STD_ERROR_HANDLE, buffer, length);
            break;
        case 3:
            if (length != 4)
                return fail("the relay sent a broken exit code");
            return (int)((unsigned char)buffer[0] | (unsigned char)buffer[1] << 8
                | (unsigned char)buffer[2] << 16 | (unsigned int)(unsigned char)buffer[3] << 24);
        default:
            return fail("the relay sent an unknown frame");
        }
    }
}
