// Physical-limit probe: limit_probe.c's per-event logistic-MF SGD (d=32, the same loop and
// prefetch), with the events' ids first resolved to rows through an id map, as embcore must:
// 64-bit sparse ids, open addressing with linear probing over 16-byte slots (key + row) sized
// as embcore sizes its map (the next power of two >= 10/7 of the ids), one batched pass per
// column and thread with each id hashed once and its slot prefetched 16 ids ahead. Nothing
// else: no statistics, no optimizer state, no growth, no concurrent inserts.
// usage: limit_probe_mapped USERS ITEMS EVENTS THREADS
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <math.h>
#include <time.h>
#include <pthread.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define D 32
#define AHEAD 16
typedef struct { uint64_t key; uint32_t row; uint32_t pad; } slot;
typedef struct { slot *s; size_t mask; } map;
static inline uint64_t mix64(uint64_t x){x^=x>>33;x*=0xff51afd7ed558ccdULL;x^=x>>33;x*=0xc4ceb9fe1a85ec53ULL;return x^(x>>33);}
static inline uint64_t sparse(uint64_t k){return (k*0x9E3779B97F4A7C15ULL)^0x5DEECE66DULL;}
static map build(size_t n){ size_t len=16; while(len<n*10/7+1) len<<=1;
 map m={aligned_alloc(64,len*sizeof(slot)),len-1};
 for(size_t i=0;i<len;i++){m.s[i].key=0;m.s[i].row=UINT32_MAX;}
 for(size_t k=0;k<n;k++){uint64_t id=sparse(k); size_t i=mix64(id)&m.mask;
  while(m.s[i].row!=UINT32_MAX) i=(i+1)&m.mask;
  m.s[i].key=id; m.s[i].row=(uint32_t)k;}
 return m;}
// Rows of ids[0..n) into rows[0..n): each id hashed once, its first slot prefetched AHEAD ahead.
static void lookup(const map*m,const uint64_t*ids,uint32_t*rows,size_t n){ size_t ring[AHEAD];
 for(size_t k=0;k<AHEAD&&k<n;k++){ring[k]=mix64(ids[k])&m->mask;__builtin_prefetch(&m->s[ring[k]]);}
 for(size_t e=0;e<n;e++){ size_t i=ring[e%AHEAD];
  if(e+AHEAD<n){size_t j=mix64(ids[e+AHEAD])&m->mask;ring[e%AHEAD]=j;__builtin_prefetch(&m->s[j]);}
  while(m->s[i].key!=ids[e]) i=(i+1)&m->mask;
  rows[e]=m->s[i].row;}}
typedef struct {float *U,*V; const map *mu,*mv; uint64_t *uk,*vk; uint32_t *ui,*vi; uint8_t *y; size_t n0,n1; double lookup_s;} job;
static void* run(void*a){job*j=a;float lr=0.05f; double t0=now();
 lookup(j->mu,j->uk+j->n0,j->ui+j->n0,j->n1-j->n0); lookup(j->mv,j->vk+j->n0,j->vi+j->n0,j->n1-j->n0);
 j->lookup_s=now()-t0;
 for(size_t e=j->n0;e<j->n1;e++){ float*u=j->U+(size_t)j->ui[e]*D,*v=j->V+(size_t)j->vi[e]*D;
  if(e+8<j->n1){__builtin_prefetch(j->U+(size_t)j->ui[e+8]*D,1);__builtin_prefetch(j->V+(size_t)j->vi[e+8]*D,1);
   __builtin_prefetch(j->U+(size_t)j->ui[e+8]*D+16,1);__builtin_prefetch(j->V+(size_t)j->vi[e+8]*D+16,1);}
  float s=0; for(int k=0;k<D;k++) s+=u[k]*v[k];
  float g=(1.f/(1.f+expf(-s)))-j->y[e];
  for(int k=0;k<D;k++){float uk=u[k]; u[k]-=lr*g*v[k]; v[k]-=lr*g*uk;}
 } return 0;}
int main(int argc,char**argv){ if(argc<5){fprintf(stderr,"usage: %s USERS ITEMS EVENTS THREADS\n",argv[0]);return 2;}
 size_t NU=atol(argv[1]),NV=atol(argv[2]),NE=atol(argv[3]); int T=atoi(argv[4]); if(T<1||T>16){fprintf(stderr,"THREADS must be 1..16\n");return 2;}
 float*U=aligned_alloc(64,NU*D*4),*V=aligned_alloc(64,NV*D*4);
 for(size_t i=0;i<NU*D;i++)U[i]=(rand()/(float)RAND_MAX-.5f)*.1f;
 for(size_t i=0;i<NV*D;i++)V[i]=(rand()/(float)RAND_MAX-.5f)*.1f;
 map mu=build(NU),mv=build(NV);
 uint64_t*uk=malloc(NE*8),*vk=malloc(NE*8); uint32_t*ui=malloc(NE*4),*vi=malloc(NE*4); uint8_t*y=malloc(NE);
 // The same events as limit_probe (uniform dense indices), given to the map as sparse ids.
 uint64_t x=88172645463325252ull; for(size_t e=0;e<NE;e++){x^=x<<13;x^=x>>7;x^=x<<17;uk[e]=sparse(x%NU);x^=x<<13;x^=x>>7;x^=x<<17;vk[e]=sparse(x%NV);y[e]=x>>63;}
 for(size_t e=0;e<NE;e++){ui[e]=0;vi[e]=0;} // fault the row arrays in before timing
 pthread_t th[16]; job J[16]; double t0=now();
 for(int t=0;t<T;t++){J[t]=(job){U,V,&mu,&mv,uk,vk,ui,vi,y,NE*t/T,NE*(t+1)/T,0};pthread_create(&th[t],0,run,&J[t]);}
 for(int t=0;t<T;t++)pthread_join(th[t],0);
 double dt=now()-t0;
 printf("mapped events/s %.3e (threads %d, users %zu, items %zu, dim %d)\n",NE/dt,T,NU,NV,D);
 printf("lookup ns/event %.1f (both columns, thread 0)\n",J[0].lookup_s/(J[0].n1-J[0].n0)*1e9);
 return (int)(U[0]+V[0])&0;}
