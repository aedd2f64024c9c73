/* Status codes shared by every csrc function. */
#ifndef ANN_STATUS_H
#define ANN_STATUS_H

enum {
    ANN_OK = 0,
    ANN_ERR_NOMEM = -1,     /* arena full or allocation failed */
    ANN_ERR_ARG = -2,       /* invalid argument (size, kind, pointer) */
    ANN_ERR_LABEL = -3,     /* class index outside [0, n_classes) */
    ANN_ERR_BACKEND = -4    /* the GEMM backend (oneDNN) refused or failed */
};

/* A short English message for a status code. */
const char *ann_strerror(int status);

#endif
