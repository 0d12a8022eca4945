/* An intrusive circular doubly-linked list with a sentinel head, in the manner of libuv's
 * QUEUE and the Linux kernel's list_head: nodes live inside the objects listed, insertion
 * and removal are O(1) and need no special case for the first or last element. */
#ifndef SG_CORE_LIST_H
#define SG_CORE_LIST_H

#include <stddef.h>

typedef struct sg_list {
  struct sg_list *prev, *next;
} sg_list;

/* Makes |head| an empty list (also usable on a node to mark it unlinked). */
static inline void sg_list_init(sg_list *head) {
  head->prev = head->next = head;
}

static inline int sg_list_empty(const sg_list *head) {
  return head->next == head;
}

/* Inserts |node| at the front of |head|. */
static inline void sg_list_push(sg_list *head, sg_list *node) {
  node->next = head->next;
  node->prev = head;
  head->next->prev = node;
  head->next = node;
}

/* Removes |node| from whatever list holds it and leaves it unlinked; removing an unlinked node
 * is a no-op. */
static inline void sg_list_remove(sg_list *node) {
  node->prev->next = node->next;
  node->next->prev = node->prev;
  sg_list_init(node);
}

/* Iterates |pos| over the nodes of |head|; |pos| may be removed inside the loop body. */
#define sg_list_foreach_safe(pos, tmp, head)                                                       \
  for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                                 \
       (pos) = (tmp), (tmp) = (pos)->next)

#endif
