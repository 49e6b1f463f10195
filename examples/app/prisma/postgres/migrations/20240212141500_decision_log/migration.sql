-- CreateTable
CREATE TABLE "decision_log" (
    "id" SERIAL NOT NULL,
    "shopId" TEXT NOT NULL,
    "operator" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'ok',
    "detail" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "decision_log_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "decision_log_shopId_created_at_idx" ON "decision_log"("shopId", "created_at");

-- CreateIndex
CREATE INDEX "decision_log_status_created_at_idx" ON "decision_log"("status", "created_at");

-- AddForeignKey
ALTER TABLE "decision_log" ADD CONSTRAINT "decision_log_shopId_fkey" FOREIGN KEY ("shopId") REFERENCES "Shop"("id") ON DELETE CASCADE ON UPDATE CASCADE;
